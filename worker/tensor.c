/* SPDX-License-Identifier: MIT */
/*
 * tensor.c - the tensors of an attachment: those of a safetensors file,
 * or those of every safetensors member of a bundle (a sharded
 * checkpoint).  A bundle's *.safetensors.index.json at its top level (the
 * Hugging Face layout) says which shard holds each tensor: its weight_map
 * is read once at attach time, bounded in size, each shard it names
 * checked to be a safetensors member, and kept as tensor name -> member
 * index.  attach.c calls tensor_load once every member is mapped.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "attach.h"
#include "safetensors.h"

/* Largest index file read, in bytes: published ones hold some 10^4
 * tensors in well under a megabyte. */
#define TENSOR_INDEX_MAX (16u << 20)

static const char tensor_index_suffix[] = ".safetensors.index.json";

/* Whether name is an index at the top of the bundle. */
static bool
tensor_is_index(const char *name)
{
	size_t len = strlen(name), suffix = sizeof tensor_index_suffix - 1;

	return strchr(name, '/') == NULL && len > suffix &&
	       strcmp(name + len - suffix, tensor_index_suffix) == 0;
}

/* The index of the safetensors member called name, or -1. */
static int
tensor_shard(const struct mb_attachment *att, const char *name)
{
	for (size_t i = 0; i < att->count; i++)
		if (att->members[i].tensors != NULL &&
		    strcmp(att->members[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Adds the weight_map of index member m to att's (the first index to
 * name a tensor wins).  0, MB_EFORMAT with a reason, or -ENOMEM. */
static int
tensor_load_index(struct mb_attachment *att, const struct attach_member *m,
		  char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *map, *value;
	const char *key;
	int r = 0;

	if (m->size > TENSOR_INDEX_MAX) {
		snprintf(err, errlen,
			 "%s: an index of %zu bytes is over the "
			 "bound of %u",
			 m->name, m->size, TENSOR_INDEX_MAX);
		return MB_EFORMAT;
	}
	root = json_loadb(m->data != NULL ? (const char *)m->data : "", m->size,
			  JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(err, errlen, "%s: not a JSON index: %s (line %d)",
			 m->name, jerr.text, jerr.line);
		return MB_EFORMAT;
	}
	if (!json_is_object(map = json_object_get(root, "weight_map"))) {
		snprintf(err, errlen, "%s: no weight_map object", m->name);
		json_decref(root);
		return MB_EFORMAT;
	}
	if (att->weight_map == NULL &&
	    (att->weight_map = json_object()) == NULL)
		r = -ENOMEM;
	json_object_foreach(map, key, value) {
		int shard = json_is_string(value)
				? tensor_shard(att, json_string_value(value))
				: -1;

		if (r < 0)
			break;
		if (shard < 0) {
			snprintf(err, errlen,
				 "%s: the weight_map puts %s in "
				 "%s, which is no safetensors member",
				 m->name, key,
				 json_is_string(value)
				     ? json_string_value(value)
				     : "?");
			r = MB_EFORMAT;
		} else if (json_object_get(att->weight_map, key) == NULL &&
			   json_object_set_new(att->weight_map, key,
					       json_integer(shard)) < 0) {
			r = -ENOMEM;
		}
	}
	json_decref(root);
	return r;
}

int
tensor_load(struct mb_attachment *att, char *err, size_t errlen)
{
	char why[256];
	int r;

	for (size_t i = 0; i < att->count; i++) {
		struct attach_member *m = &att->members[i];

		if (strcmp(m->format, "safetensors") != 0)
			continue;
		r = st_parse(m->data != NULL ? m->data : (const void *)"",
			     m->size, m->size, &m->tensors, why, sizeof why);
		if (r < 0) {
			snprintf(err, errlen, "%s%s%s",
				 att->bundle ? m->name : "",
				 att->bundle ? ": " : "", why);
			return r;
		}
		att->tensor_count += m->tensors->count;
	}
	for (size_t i = 0; att->bundle && i < att->count; i++)
		if (tensor_is_index(att->members[i].name) &&
		    (r = tensor_load_index(att, &att->members[i], err,
					   errlen)) < 0)
			return r;
	return 0;
}

void
tensor_free(struct mb_attachment *att)
{
	for (size_t i = 0; i < att->count; i++)
		st_table_free(att->members[i].tensors);
	json_decref(att->weight_map);
}

size_t
mb_tensor_count(const struct mb_attachment *att)
{
	return att->tensor_count;
}

static void
tensor_fill(const struct attach_member *m, const struct st_tensor *t,
	    struct mb_tensor *out)
{
	out->name = t->name;
	out->dtype = t->dtype;
	out->ndim = t->ndim;
	memcpy(out->shape, t->shape, sizeof out->shape);
	out->data = m->data + t->offset;
	out->nbytes = (size_t)t->nbytes;
}

int
mb_tensor_at(const struct mb_attachment *att, size_t index,
	     struct mb_tensor *out)
{
	for (size_t i = 0; i < att->count; i++) {
		const struct st_table *table = att->members[i].tensors;

		if (table == NULL)
			continue;
		if (index < table->count) {
			tensor_fill(&att->members[i], &table->tensors[index],
				    out);
			return 0;
		}
		index -= table->count;
	}
	return MB_ENOTENSOR;
}

int
mb_tensor_find(const struct mb_attachment *att, const char *name,
	       struct mb_tensor *out)
{
	const struct st_tensor *t;

	if (att->weight_map != NULL) {
		const json_t *shard = json_object_get(att->weight_map, name);
		const struct attach_member *m;

		if (shard == NULL)
			return MB_ENOTENSOR;
		m = &att->members[json_integer_value(shard)];
		if ((t = st_table_find(m->tensors, name)) == NULL)
			return MB_ENOTENSOR;
		tensor_fill(m, t, out);
		return 0;
	}
	for (size_t i = 0; i < att->count; i++) {
		const struct attach_member *m = &att->members[i];

		if (m->tensors != NULL &&
		    (t = st_table_find(m->tensors, name)) != NULL) {
			tensor_fill(m, t, out);
			return 0;
		}
	}
	return MB_ENOTENSOR;
}
