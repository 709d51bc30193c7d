/* SPDX-License-Identifier: MIT */
/*
 * test_bundle_client.c - libmbroker attaching bundles (models made of many
 * files), against tests/tools/fake_broker.py serving directories as the
 * broker does: members in name order, descriptors 8 to a message, the
 * rest through the "members" op.  What is checked is what a worker sees:
 * the bytes of each of 20 members through its mapping, members found by
 * name, a 0-byte member, kept descriptors opening read-only by
 * /proc/self/fd/N, the member directory laid out like the bundle and
 * removed by mb_detach, mb_ack and mb_close, no descriptor left behind,
 * tensors of a sharded checkpoint found through its index, an index cut
 * short or too large refused with a reason, stray descriptors refused and
 * closed, a member whose descriptor is no regular file refused, a reply
 * naming the model with a path ("../escape") refused,
 * mb_follow_replace keeping MB_ATTACH_KEEP_FDS, MB_ATTACH_POPULATE
 * leaving every page of every member in the page tables (the Rss of the
 * mappings in /proc/self/smaps, none without it), and a single file that
 * is still one member.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "unit.h"

#include "mbroker.h"

#define MEMBERS 20
#define INDEX_BOUND (16u << 20)

static char dir[64], sock[128], logpath[128];
static pid_t fake = -1;
static struct mb_client *client;

/* The 20 members of bundle "b": 17 files of sizes that cross pages, an
 * empty one, and two in subdirectories; in bytewise name order. */
static const char *const names[MEMBERS] = {
    "empty", "f00", "f01", "f02", "f03",	  "f04",      "f05",
    "f06",   "f07", "f08", "f09", "f10",	  "f11",      "f12",
    "f13",   "f14", "f15", "f16", "sub/deeper/x", "sub/file",
};

static size_t
member_size(size_t i)
{
	return i == 0 ? 0 : 1000 + 4099 * i;
}

static unsigned char
member_byte(size_t i, size_t at)
{
	return (unsigned char)(i * 31 + at * 7);
}

/* Writes size bytes of body at dir/bundle/name, making its directories. */
static void
write_file(const char *bundle, const char *name, const void *body, size_t size)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s/%s", dir, bundle, name);
	for (char *s = strchr(path + strlen(dir) + 1, '/'); s != NULL;
	     s = strchr(s + 1, '/')) {
		*s = '\0';
		mkdir(path, 0700);
		*s = '/';
	}
	assert_non_null(f = fopen(path, "wb"));
	assert_int_equal(fwrite(body, 1, size, f), size);
	assert_int_equal(fclose(f), 0);
}

/* A safetensors file of F32 tensors of 2 values each, named in order. */
static void
write_shard(const char *bundle, const char *name, const char *const *tensors,
	    int count, float first)
{
	unsigned char file[1024];
	char header[512];
	size_t len = 0, hlen;

	len += (size_t)snprintf(header + len, sizeof header - len, "{");
	for (int t = 0; t < count; t++)
		len += (size_t)snprintf(header + len, sizeof header - len,
					"%s\"%s\":{\"dtype\":\"F32\",\"shape\""
					":[2],\"data_offsets\":[%d,%d]}",
					t ? "," : "", tensors[t], 8 * t,
					8 * t + 8);
	len += (size_t)snprintf(header + len, sizeof header - len, "}");
	while (len % 8 != 0)
		header[len++] = ' ';
	hlen = len;
	for (int b = 0; b < 8; b++)
		file[b] = (unsigned char)(hlen >> (8 * b));
	memcpy(file + 8, header, hlen);
	for (int v = 0; v < 2 * count; v++) {
		float x = first + (float)v;

		memcpy(file + 8 + hlen + 4 * (size_t)v, &x, 4);
	}
	write_file(bundle, name, file, 8 + hlen + 8 * (size_t)count);
}

static void
write_bundles(void)
{
	static const char *const first[] = {"layer.0.w"};
	static const char *const second[] = {"layer.1.w", "unindexed"};
	static const char index[] =
	    "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
	    "\"layer.0.w\":\"model-00001-of-00002.safetensors\","
	    "\"layer.1.w\":\"model-00002-of-00002.safetensors\"}}";
	static const char cut[] = "{\"weight_map\":{\"t\":\"a.safe";
	unsigned char *body = malloc(INDEX_BOUND + 2);

	assert_non_null(body);
	for (size_t i = 0; i < MEMBERS; i++) {
		for (size_t at = 0; at < member_size(i); at++)
			body[at] = member_byte(i, at);
		write_file("b", names[i], body, member_size(i));
	}
	write_shard("ckpt", "model-00001-of-00002.safetensors", first, 1, 1);
	write_shard("ckpt", "model-00002-of-00002.safetensors", second, 2, 10);
	write_file("ckpt", "model.safetensors.index.json", index,
		   sizeof index - 1);
	write_file("ckpt", "config.json", "{}", 2);
	write_shard("cut", "a.safetensors", first, 1, 1);
	write_file("cut", "model.safetensors.index.json", cut, sizeof cut - 1);
	write_shard("large", "a.safetensors", first, 1, 1);
	memset(body, ' ', INDEX_BOUND + 2);
	memcpy(body + INDEX_BOUND, "{}", 2);
	write_file("large", "model.safetensors.index.json", body,
		   INDEX_BOUND + 2);
	free(body);
}

/* Starts the fake broker serving the bundles, its log in logpath. */
static void
start_fake(void)
{
	char list[160], arg[5][160];
	const char *bundles[] = {"b", "ckpt", "cut", "large", "stray"};
	const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
	FILE *f;

	snprintf(list, sizeof list, "%s/list.json", dir);
	assert_non_null(f = fopen(list, "w"));
	fputs("{\"name\":\"m\",\"generation\":1}", f);
	fclose(f);
	for (int i = 0; i < 5; i++)
		snprintf(arg[i], sizeof arg[i], "%s=%s/%s", bundles[i], dir,
			 i < 4 ? bundles[i] : "b");
	snprintf(logpath, sizeof logpath, "%s/fake.log", dir);
	fake = fork();
	if (fake == 0) {
		int out = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(out, STDOUT_FILENO);
		setenv("MB_BIN", build, 1);
		/* The checksums come from the library under test, which
		 * may be built with a sanitizer. */
		setenv("ASAN_OPTIONS",
		       "verify_asan_link_order=0:detect_leaks=0", 1);
		execl("/usr/bin/python3", "python3",
		      "tests/tools/fake_broker.py", sock, list, arg[0], arg[1],
		      arg[2], arg[3], arg[4], "--stray=stray",
		      "--forged=dirfd=[[\"a\",{\"dir\":\"/proc/self\"}],"
		      "[\"b\",\"x\"]]",
		      (char *)NULL);
		_exit(127);
	}
}

/* Whether the fake broker's log has line. */
static bool
logged(const char *line)
{
	char buf[256];
	bool found = false;
	FILE *f = fopen(logpath, "r");

	while (f != NULL && !found && fgets(buf, sizeof buf, f) != NULL) {
		buf[strcspn(buf, "\n")] = '\0';
		found = strcmp(buf, line) == 0;
	}
	if (f != NULL)
		fclose(f);
	return found;
}

/* Polls for line in the log for at most 10 s. */
static bool
logged_soon(const char *line)
{
	for (int i = 0; i < 1000; i++) {
		if (logged(line))
			return true;
		poll(NULL, 0, 10);
	}
	return false;
}

static int
group_setup(void **state)
{
	(void)state;
	/* Run from the top of the source tree, as make does. */
	if (access("/usr/bin/python3", X_OK) != 0 ||
	    access("tests/tools/fake_broker.py", R_OK) != 0) {
		fprintf(stderr, "SKIP: needs /usr/bin/python3 and "
				"tests/tools/fake_broker.py (run from the "
				"source tree)\n");
		exit(77);
	}
	snprintf(dir, sizeof dir, "/tmp/mbroker-bundle.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(sock, sizeof sock, "%s/b.sock", dir);
	write_bundles();
	start_fake();
	for (int i = 0; i < 1000; i++) {
		if (mb_connect_ex(sock, -1, 1000, &client) == 0) {
			mb_set_timeout(client, 10000);
			return 0;
		}
		poll(NULL, 0, 10);
	}
	return -1;
}

static int
group_teardown(void **state)
{
	char cmd[128];

	(void)state;
	mb_close(client);
	if (fake > 0) {
		kill(fake, SIGKILL);
		waitpid(fake, NULL, 0);
	}
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* The bytes of member i are what was written. */
static void
assert_member_bytes(size_t i, const void *data, size_t size)
{
	const unsigned char *p = data;

	assert_int_equal(size, member_size(i));
	for (size_t at = 0; at < size; at++)
		if (p[at] != member_byte(i, at))
			fail_msg("%s: byte %zu differs", names[i], at);
}

/* The bundle's checksum recomputed from its members (docs/protocol.md). */
static uint64_t
bundle_checksum(const struct mb_attachment *att)
{
	unsigned char buf[MEMBERS * 280];
	size_t len = 0;

	for (size_t i = 0; i < mb_member_count(att); i++) {
		struct mb_member m;

		assert_int_equal(mb_member_at(att, i, &m), 0);
		memcpy(buf + len, m.name, strlen(m.name) + 1);
		len += strlen(m.name) + 1;
		for (int b = 0; b < 8; b++)
			buf[len++] = (unsigned char)((uint64_t)m.size >> 8 * b);
		for (int b = 0; b < 8; b++)
			buf[len++] = (unsigned char)(m.checksum >> 8 * b);
	}
	return mb_checksum(buf, len);
}

static void
test_bundle_members_through_pages(void **state)
{
	struct mb_attachment *att;
	struct mb_member m;
	char path[64];
	int before = unit_fd_count();

	(void)state;
	assert_int_equal(mb_attach(client, "b", &att), 0);
	assert_int_equal(unit_fd_count(), before);
	assert_int_equal(mb_member_count(att), MEMBERS);
	assert_string_equal(mb_attachment_format(att), "bundle");
	assert_null(mb_attachment_data(att));
	for (size_t i = 0; i < MEMBERS; i++) {
		assert_int_equal(mb_member_at(att, i, &m), 0);
		assert_string_equal(m.name, names[i]);
		assert_string_equal(m.format, "raw");
		assert_member_bytes(i, m.data, m.size);
		assert_true(m.checksum == mb_checksum(m.data, m.size));
		assert_int_equal(mb_member_fd(att, i), -1);
	}
	assert_true(bundle_checksum(att) == mb_attachment_checksum(att));
	assert_int_equal(mb_member_at(att, MEMBERS, &m), -ERANGE);
	assert_int_equal(mb_member_find(att, "empty", &m), 0);
	assert_null(m.data);
	assert_int_equal(m.size, 0);
	assert_int_equal(mb_member_find(att, "sub/file", &m), 0);
	assert_member_bytes(MEMBERS - 1, m.data, m.size);
	assert_int_equal(mb_member_find(att, "sub", &m), -ENOENT);
	assert_int_equal(mb_attachment_fd(att), -1);
	assert_int_equal(mb_member_path(att, 0, path, sizeof path), -EBADF);
	assert_int_equal(mb_member_dir(att, path, sizeof path), -EBADF);
	assert_true(logged_soon("members #1 8"));
	assert_true(logged("members #1 16"));
	assert_int_equal(mb_detach(att), 0);
	assert_int_equal(unit_fd_count(), before);
}

static void
test_bundle_kept_fds_open_by_path(void **state)
{
	struct mb_attachment *att;
	unsigned char buf[100000];
	char path[64], tiny[8];
	int before = unit_fd_count();

	(void)state;
	assert_int_equal(mb_attach_ex(client, "b", MB_ATTACH_KEEP_FDS, 0, &att),
			 0);
	assert_int_equal(unit_fd_count(), before + MEMBERS);
	assert_int_equal(mb_attachment_fd(att), mb_member_fd(att, 0));
	for (size_t i = 0; i < MEMBERS; i++) {
		int fd;
		ssize_t n;

		assert_int_equal(mb_member_path(att, i, path, sizeof path), 0);
		assert_non_null(strstr(path, "/proc/self/fd/"));
		assert_true((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0);
		n = read(fd, buf, sizeof buf);
		close(fd);
		assert_member_bytes(i, buf, (size_t)n);
	}
	assert_int_equal(mb_member_path(att, 0, tiny, sizeof tiny),
			 -ENAMETOOLONG);
	assert_int_equal(mb_member_path(att, MEMBERS, path, sizeof path),
			 -ERANGE);
	assert_int_equal(mb_member_fd(att, MEMBERS), -1);
	assert_int_equal(mb_detach(att), 0);
	assert_int_equal(unit_fd_count(), before);
}

/* The member directory of a new KEEP_FDS attachment of "b", checked. */
static struct mb_attachment *
attach_with_dir(struct mb_client *c, char *top, size_t len)
{
	struct mb_attachment *att;
	unsigned char buf[100000];
	char again[4096], path[4200];
	struct stat st;
	ssize_t n;
	int fd;

	assert_int_equal(mb_attach_ex(c, "b", MB_ATTACH_KEEP_FDS, 0, &att), 0);
	assert_int_equal(mb_member_dir(att, top, len), 0);
	assert_int_equal(mb_member_dir(att, again, sizeof again), 0);
	assert_string_equal(top, again);
	assert_int_equal(stat(top, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(path, sizeof path, "%s/sub/deeper/x", top);
	assert_true((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0);
	n = read(fd, buf, sizeof buf);
	close(fd);
	assert_member_bytes(MEMBERS - 2, buf, (size_t)n);
	snprintf(path, sizeof path, "%s/empty", top);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	return att;
}

static void
test_bundle_member_dir_removed(void **state)
{
	struct mb_attachment *att;
	struct mb_client *other;
	struct mb_member m;
	char top[4096];
	int before = unit_fd_count();

	(void)state;
	att = attach_with_dir(client, top, sizeof top);
	assert_int_equal(mb_detach(att), 0);
	assert_int_equal(access(top, F_OK), -1);
	assert_int_equal(unit_fd_count(), before);

	/* mb_ack lets go of everything, the directory and descriptors
	 * too; the handle stays, its bytes read as zeros. */
	att = attach_with_dir(client, top, sizeof top);
	assert_int_equal(mb_ack(client), 0);
	assert_int_equal(access(top, F_OK), -1);
	assert_int_equal(unit_fd_count(), before);
	assert_int_equal(mb_member_fd(att, 3), -1);
	assert_int_equal(mb_member_dir(att, top, sizeof top), -EBADF);
	assert_int_equal(mb_member_find(att, "f16", &m), 0);
	for (size_t at = 0; at < m.size; at++)
		assert_int_equal(((const unsigned char *)m.data)[at], 0);
	mb_detach(att);

	assert_int_equal(mb_connect_ex(sock, -1, 10000, &other), 0);
	mb_set_timeout(other, 10000);
	att = attach_with_dir(other, top, sizeof top);
	(void)att;
	mb_close(other);
	assert_int_equal(access(top, F_OK), -1);
	assert_int_equal(unit_fd_count(), before);
}

static void
test_bundle_tensors_through_the_index(void **state)
{
	static const char *const order[] = {"layer.0.w", "layer.1.w",
					    "unindexed"};
	struct mb_attachment *att;
	struct mb_member shard;
	struct mb_tensor t;
	float v[2];

	(void)state;
	assert_int_equal(mb_attach(client, "ckpt", &att), 0);
	assert_int_equal(mb_tensor_count(att), 3);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(mb_tensor_at(att, i, &t), 0);
		assert_string_equal(t.name, order[i]);
	}
	assert_int_equal(mb_tensor_at(att, 3, &t), MB_ENOTENSOR);
	assert_int_equal(mb_tensor_find(att, "layer.1.w", &t), 0);
	assert_int_equal(
	    mb_member_find(att, "model-00002-of-00002.safetensors", &shard), 0);
	assert_string_equal(shard.format, "safetensors");
	assert_true((const char *)t.data > (const char *)shard.data &&
		    (const char *)t.data + t.nbytes <=
			(const char *)shard.data + shard.size);
	memcpy(v, t.data, sizeof v);
	assert_true(v[0] == 10 && v[1] == 11);
	assert_int_equal(mb_tensor_find(att, "layer.0.w", &t), 0);
	memcpy(v, t.data, sizeof v);
	assert_true(v[0] == 1 && v[1] == 2);
	/* In a shard but not in the index: the index is what counts. */
	assert_int_equal(mb_tensor_find(att, "unindexed", &t), MB_ENOTENSOR);
	assert_int_equal(mb_tensor_find(att, "missing", &t), MB_ENOTENSOR);
	assert_int_equal(mb_detach(att), 0);
}

static void
test_bundle_bad_index_refused(void **state)
{
	struct mb_attachment *att = NULL;
	int before = unit_fd_count();

	(void)state;
	assert_int_equal(mb_attach(client, "cut", &att), MB_EFORMAT);
	assert_null(att);
	assert_non_null(
	    strstr(mb_last_error(client),
		   "model.safetensors.index.json: not a JSON index"));
	assert_int_equal(mb_attach(client, "large", &att), MB_EFORMAT);
	assert_non_null(strstr(mb_last_error(client), "over the bound"));
	assert_int_equal(unit_fd_count(), before);
}

static void
test_bundle_stray_fds_closed(void **state)
{
	struct mb_attachment *att = NULL;
	int before = unit_fd_count();

	(void)state;
	/* "stray" is "b" with one descriptor too many in each message. */
	assert_int_equal(
	    mb_attach_ex(client, "stray", MB_ATTACH_KEEP_FDS, 0, &att),
	    MB_EPROTOCOL);
	assert_null(att);
	assert_int_equal(unit_fd_count(), before);
}

static void
test_bundle_member_not_a_file_refused(void **state)
{
	struct mb_attachment *att = NULL;
	int before = unit_fd_count();

	(void)state;
	/* "dirfd" is a broker's lie: member "a" comes as a descriptor of a
	 * directory whose size (0) is what the reply says.  Through it,
	 * mb_member_dir's link "a" would lead out of the private directory
	 * for a member "a/..." after it. */
	assert_int_equal(
	    mb_attach_ex(client, "dirfd", MB_ATTACH_KEEP_FDS, 0, &att),
	    MB_EPROTOCOL);
	assert_null(att);
	assert_int_equal(unit_fd_count(), before);
}

static void
test_model_name_that_leaves_member_dir_refused(void **state)
{
	struct mb_attachment *att = NULL;
	char top[4096], tmp[128], escape[160];
	int before = unit_fd_count();

	(void)state;
	/* The fake names the model in its reply as asked, as a hostile
	 * broker may: a single file's link in mb_member_dir is named after
	 * it, so "../escape" would be made beside the private directory. */
	snprintf(tmp, sizeof tmp, "%s/tmp", dir);
	snprintf(escape, sizeof escape, "%s/escape", tmp);
	assert_int_equal(mkdir(tmp, 0700), 0);
	setenv("TMPDIR", tmp, 1);
	if (mb_attach_ex(client, "../escape", MB_ATTACH_KEEP_FDS, 0, &att) ==
	    0) {
		mb_member_dir(att, top, sizeof top);
		fail_msg("attached; %s is %s", escape,
			 access(escape, F_OK) == 0 || errno != ENOENT
			     ? "made"
			     : "not made");
	}
	unsetenv("TMPDIR");
	assert_null(att);
	assert_int_equal(mb_attach(client, "a/b", &att), MB_EPROTOCOL);
	assert_int_equal(unit_fd_count(), before);
}

static void
test_bundle_follow_replace_keeps_fds(void **state)
{
	struct mb_event ev = {.type = MB_EVENT_REPLACED,
			      .model = "b",
			      .generation = 2,
			      .old_generation = 1};
	struct mb_attachment *att, *old;

	(void)state;
	assert_int_equal(mb_attach_ex(client, "b", MB_ATTACH_KEEP_FDS, 0, &att),
			 0);
	old = att;
	assert_int_equal(mb_follow_replace(client, &att, &ev), 0);
	assert_ptr_not_equal(att, old);
	assert_true(mb_member_fd(att, MEMBERS - 1) >= 0);
	assert_int_equal(mb_detach(att), 0);
}

/* Kilobytes of the mappings that start in [start, start + len) that are
 * in this process's page tables (their Rss in /proc/self/smaps). */
static size_t
resident_kb(const void *start, size_t len)
{
	uintptr_t from = (uintptr_t)start, vma = 0, end;
	size_t total = 0, kb;
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "r");

	assert_non_null(f);
	while (fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &vma, &end) == 2)
			continue;
		if (sscanf(line, "Rss: %zu kB", &kb) == 1 && vma >= from &&
		    vma < from + len)
			total += kb;
	}
	fclose(f);
	return total;
}

/* Kilobytes of whole pages that the members of att span. */
static size_t
members_kb(const struct mb_attachment *att)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), total = 0;
	struct mb_member m;

	for (size_t i = 0; mb_member_at(att, i, &m) == 0; i++)
		total += (m.size + page - 1) / page * page / 1024;
	return total;
}

/* Where the region of att starts and how long it is: from its first
 * member with bytes to the end of its last. */
static void
members_span(const struct mb_attachment *att, const void **start, size_t *len)
{
	struct mb_member first, last;

	assert_int_equal(mb_member_at(att, 1, &first), 0);
	assert_int_equal(mb_member_at(att, mb_member_count(att) - 1, &last), 0);
	*start = first.data;
	*len = (size_t)((const unsigned char *)last.data + last.size -
			(const unsigned char *)first.data);
}

static void
test_bundle_populate_fills_page_tables(void **state)
{
	struct mb_event ev = {.type = MB_EVENT_REPLACED,
			      .model = "b",
			      .generation = 2,
			      .old_generation = 1};
	struct mb_attachment *att;
	const void *start;
	size_t len;

	(void)state;
	assert_int_equal(mb_attach(client, "b", &att), 0);
	members_span(att, &start, &len);
	assert_int_equal(resident_kb(start, len), 0);
	assert_int_equal(mb_detach(att), 0);

	assert_int_equal(mb_attach_ex(client, "b", MB_ATTACH_POPULATE, 0, &att),
			 0);
	members_span(att, &start, &len);
	assert_true(members_kb(att) > 0);
	assert_int_equal(resident_kb(start, len), members_kb(att));
	/* The generation it moves to is populated too. */
	assert_int_equal(mb_follow_replace(client, &att, &ev), 0);
	members_span(att, &start, &len);
	assert_int_equal(resident_kb(start, len), members_kb(att));
	assert_int_equal(mb_detach(att), 0);
}

static void
test_single_file_is_one_member(void **state)
{
	struct mb_attachment *att;
	struct mb_member m;
	unsigned char buf[8192];
	char top[4096], path[4200];
	int fd;

	(void)state;
	assert_int_equal(mb_attach(client, "m", &att), 0);
	assert_int_equal(mb_member_count(att), 1);
	assert_int_equal(mb_member_at(att, 0, &m), 0);
	assert_string_equal(m.name, "m");
	assert_string_equal(m.format, "raw");
	assert_ptr_equal(m.data, mb_attachment_data(att));
	assert_int_equal(m.size, mb_attachment_size(att));
	assert_true(m.checksum == mb_attachment_checksum(att));
	assert_int_equal(mb_tensor_count(att), 0);
	assert_int_equal(mb_attachment_fd(att), -1);
	assert_int_equal(mb_detach(att), 0);

	assert_int_equal(mb_attach_ex(client, "m", MB_ATTACH_KEEP_FDS, 0, &att),
			 0);
	assert_int_equal(mb_member_dir(att, top, sizeof top), 0);
	snprintf(path, sizeof path, "%s/m", top);
	assert_true((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0);
	assert_int_equal(read(fd, buf, sizeof buf), sizeof buf);
	close(fd);
	assert_memory_equal(buf, mb_attachment_data(att), sizeof buf);
	assert_int_equal(mb_detach(att), 0);
	assert_int_equal(access(top, F_OK), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bundle_members_through_pages),
	    cmocka_unit_test(test_bundle_kept_fds_open_by_path),
	    cmocka_unit_test(test_bundle_member_dir_removed),
	    cmocka_unit_test(test_bundle_tensors_through_the_index),
	    cmocka_unit_test(test_bundle_bad_index_refused),
	    cmocka_unit_test(test_bundle_stray_fds_closed),
	    cmocka_unit_test(test_bundle_member_not_a_file_refused),
	    cmocka_unit_test(test_model_name_that_leaves_member_dir_refused),
	    cmocka_unit_test(test_bundle_follow_replace_keeps_fds),
	    cmocka_unit_test(test_bundle_populate_fills_page_tables),
	    cmocka_unit_test(test_single_file_is_one_member),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
