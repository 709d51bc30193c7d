# SPDX-License-Identifier: MIT
"""A Python worker attaching bundles (models made of many files), against
a fake broker (tests/tools/fake_broker.py serves a directory as the broker
does: members in name order, descriptors 8 to a message, the rest through
the "members" op).  Checked: every member of a 20-file bundle mapped with
its bytes, found by name, a 0-byte member; kept descriptors opening by
/proc/self/fd/N; the member directory laid out like the bundle and gone
after detach, ack and close; no descriptor left after detach; tensors of
a sharded safetensors checkpoint found through its index as zero-copy
numpy views; an index that is cut short or too large refused with
format_error; stray descriptors refused and closed; member names that
would leave the member directory, clash or come out of order, and a
member that is no regular file, or a model name that is a path, refused;
follow_replace keeping keep_fds; populate=True leaving every page of every
member in the page tables (their Rss in /proc/self/smaps; none without
it), through the madvise or, where the kernel refuses it, one read per
page, and kept by follow_replace; a single file unchanged."""
import errno
import json
import mmap
import os
import struct
import sys
import tempfile
import time
import unittest

import numpy as np

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tests", "tools"))
import mbroker  # noqa: E402
from fake_broker import SIZE, FakeBroker  # noqa: E402


def safetensors(tensors):
    """A safetensors file of float32 tensors: {name: numpy array}."""
    header, data = {}, b""
    for name in sorted(tensors):
        raw = tensors[name].astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(root, name, body):
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def settled_fds(want):
    """How many descriptors this process has once the fake broker (a
    thread here) has closed those it sent: want, or what is open after 5
    seconds."""
    deadline = time.monotonic() + 5
    while open_fds() != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return open_fds()


def resident_kb(att):
    """Kilobytes of att's member mappings in the page tables, and of the
    whole pages they span, from /proc/self/smaps."""
    starts = {np.frombuffer(m.data, np.uint8).ctypes.data: m.size
              for m in att.members if m.size > 0}
    rss, vma = 0, None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                vma = int(head.split("-")[0], 16)
            elif head == "Rss:" and vma in starts:
                rss += int(line.split()[1])
    pages = sum(-(-size // mmap.PAGESIZE) for size in starts.values())
    return rss, pages * mmap.PAGESIZE // 1024


class BundleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.files = {}
        root = os.path.join(self.tmp.name, "b")
        for i in range(17):
            self.files[f"f{i:02d}"] = os.urandom(1000 + 4099 * i)
        self.files["empty"] = b""
        self.files["sub/file"] = b"a file in a subdirectory\n"
        self.files["sub/deeper/x"] = b"x" * 5000
        for name, body in self.files.items():
            write(root, name, body)
        self.first = np.arange(12, dtype=np.float32).reshape(3, 4)
        self.second = np.linspace(0, 1, 5, dtype=np.float32)
        ckpt = os.path.join(self.tmp.name, "ckpt")
        write(ckpt, "model-00001-of-00002.safetensors",
              safetensors({"layer.0.w": self.first}))
        write(ckpt, "model-00002-of-00002.safetensors",
              safetensors({"layer.1.w": self.second,
                           "unindexed": self.second}))
        write(ckpt, "model.safetensors.index.json", json.dumps({
            "metadata": {"total_size": 68},
            "weight_map": {
                "layer.0.w": "model-00001-of-00002.safetensors",
                "layer.1.w": "model-00002-of-00002.safetensors"}}).encode())
        write(ckpt, "config.json", b"{}")
        sock = os.path.join(self.tmp.name, "b.sock")
        self.fake = FakeBroker(sock)
        self.fake.bundles = {"b": root, "ckpt": ckpt}
        self.addCleanup(self.fake.close)
        self.client = mbroker.connect(sock, timeout=10)
        self.client.timeout = 10
        self.addCleanup(self.client.close)

    def private_tmp(self):
        """Member directories made in the test's own directory."""
        self.addCleanup(setattr, tempfile, "tempdir", tempfile.tempdir)
        tempfile.tempdir = self.tmp.name

    def bad_index(self, name, body):
        root = os.path.join(self.tmp.name, name)
        write(root, "a.safetensors", safetensors({"t": self.second}))
        write(root, "model.safetensors.index.json", body)
        self.fake.bundles[name] = root

    def test_every_member_is_mapped_across_pages(self):
        att = self.client.attach("b")
        names = sorted(self.files, key=str.encode)
        self.assertEqual([m.name for m in att.members], names)
        for m in att.members:
            self.assertEqual(bytes(m.data), self.files[m.name], m.name)
            self.assertEqual(m.size, len(self.files[m.name]))
            self.assertEqual(m.format, "raw")
            self.assertIsNone(m.fd)
        self.assertEqual(att.format, "bundle")
        self.assertIsNone(att.data)
        self.assertEqual(att.size, sum(map(len, self.files.values())))
        self.assertIn("members #1 8", self.fake.log)
        self.assertIn("members #1 16", self.fake.log)

    def test_member_found_by_name(self):
        att = self.client.attach("b")
        self.assertEqual(bytes(att.member("sub/file").data),
                         self.files["sub/file"])
        empty = att.member("empty")
        self.assertEqual((empty.size, bytes(empty.data)), (0, b""))
        with self.assertRaises(KeyError):
            att.member("sub")

    def test_kept_descriptors_open_by_path(self):
        before = open_fds()
        att = self.client.attach("b", keep_fds=True)
        for m in att.members:
            self.assertEqual(os.fstat(m.fd).st_size, m.size)
            self.assertEqual(m.path, f"/proc/self/fd/{m.fd}")
            with open(m.path, "rb") as f:
                self.assertEqual(f.read(), self.files[m.name], m.name)
        self.assertEqual(att.fd, att.members[0].fd)
        att.detach()
        self.assertEqual(settled_fds(before), before)
        self.assertIsNone(att.members[0].fd)

    def test_no_descriptor_left_without_keep_fds(self):
        before = open_fds()
        att = self.client.attach("b")
        self.assertEqual([m.fd for m in att.members], [None] * 20)
        with self.assertRaises(OSError) as cm:
            att.member_dir()
        self.assertEqual(cm.exception.errno, errno.EBADF)
        att.detach()
        self.assertEqual(settled_fds(before), before)

    def test_member_dir_is_laid_out_like_the_bundle(self):
        att = self.client.attach("b", keep_fds=True)
        top = att.member_dir()
        self.assertEqual(att.member_dir(), top)
        self.assertEqual(os.stat(top).st_mode & 0o777, 0o700)
        for sub in ("sub", "sub/deeper"):
            self.assertEqual(os.stat(os.path.join(top, sub)).st_mode & 0o777,
                             0o700)
        with open(os.path.join(top, "sub", "deeper", "x"), "rb") as f:
            self.assertEqual(f.read(), self.files["sub/deeper/x"])
        self.assertEqual(sorted(os.listdir(top)),
                         sorted(n for n in self.files if "/" not in n)
                         + ["sub"])
        att.detach()
        self.assertFalse(os.path.exists(top))

    def test_member_dir_removed_by_ack_and_close(self):
        acked = self.client.attach("b", keep_fds=True)
        top = acked.member_dir()
        self.client.ack()
        self.assertFalse(os.path.exists(top))
        self.assertIsNone(acked.fd)
        closed = self.client.attach("b", keep_fds=True)
        top = closed.member_dir()
        self.client.close()
        self.assertFalse(os.path.exists(top))

    def test_tensors_across_shards_through_the_index(self):
        att = self.client.attach("ckpt")
        self.assertEqual(list(att.tensors), ["layer.0.w", "layer.1.w"])
        first, second = att.tensor("layer.0.w"), att.tensor("layer.1.w")
        np.testing.assert_array_equal(first, self.first)
        np.testing.assert_array_equal(second, self.second)
        self.assertFalse(first.flags.writeable)
        shard = att.member("model-00002-of-00002.safetensors")
        self.assertTrue(np.shares_memory(
            second, np.frombuffer(shard.data, dtype=np.uint8)))
        with self.assertRaises(KeyError):
            att.tensor("unindexed")
        with self.assertRaises(KeyError):
            att.tensor_bytes("missing")
        del first, second

    def test_index_cut_short_is_refused(self):
        self.bad_index("cut", b'{"weight_map": {"t": "a.safe')
        with self.assertRaises(mbroker.BrokerError) as cm:
            self.client.attach("cut")
        self.assertEqual(cm.exception.code, "format_error")
        self.assertIn("model.safetensors.index.json: not a JSON index",
                      str(cm.exception))
        self.assertEqual(self.fake.log[-1], "detach #1")

    def test_index_too_large_is_refused(self):
        self.bad_index("large", b" " * (mbroker.INDEX_MAX + 1) + b"{}")
        with self.assertRaises(mbroker.BrokerError) as cm:
            self.client.attach("large")
        self.assertEqual(cm.exception.code, "format_error")
        self.assertIn("over the bound", str(cm.exception))

    def test_stray_descriptors_are_refused_and_closed(self):
        self.fake.stray = {"b"}
        before = open_fds()
        with self.assertRaises(mbroker.BrokerError) as cm:
            self.client.attach("b", keep_fds=True)
        self.assertEqual(cm.exception.code, "protocol_error")
        self.assertEqual(settled_fds(before), before)
        self.assertEqual(self.fake.log[-1], "detach #1")

    def test_hostile_member_names_are_refused(self):
        """A broker's member names that would lead the member directory
        out of its root, or clash, are refused before anything is made."""
        outside = os.path.join(self.tmp.name, "escape")
        self.private_tmp()
        before = open_fds()
        for members in ([("../escape", b"x")], [(outside, b"x")],
                        [("a/../../escape", b"x")], [("./a", b"x")],
                        [("", b"x")], [("a//b", b"x")], [("a/", b"x")],
                        [("a\nb", b"x")], [("a", b"x"), ("a", b"y")],
                        [("b", b"x"), ("a", b"y")]):
            self.fake.forged["forged"] = members
            with self.assertRaises(mbroker.BrokerError, msg=members) as cm:
                att = self.client.attach("forged", keep_fds=True)
                att.member_dir()
            self.assertEqual(cm.exception.code, "protocol_error")
            self.assertFalse(os.path.lexists(outside), members)
        self.assertEqual(settled_fds(before), before)

    def test_model_name_that_leaves_member_dir_is_refused(self):
        """The fake names the model in its reply as asked, as a hostile
        broker may: a single file's link is named after it."""
        self.private_tmp()
        before = open_fds()
        for name in ("../escape", "a/b", "..", "."):
            with self.assertRaises(mbroker.BrokerError, msg=name) as cm:
                self.client.attach(name, keep_fds=True).member_dir()
            self.assertEqual(cm.exception.code, "protocol_error")
        self.assertFalse(os.path.lexists(os.path.join(self.tmp.name,
                                                      "escape")))
        self.assertEqual(settled_fds(before), before)

    def test_member_dir_that_fails_is_not_handed_out(self):
        """A member "a" and a member "a/b" cannot both be laid out: each
        call says so, and nothing is left half made."""
        self.private_tmp()
        self.fake.forged["forged"] = [("a", b"x"), ("a/b", b"y")]
        att = self.client.attach("forged", keep_fds=True)
        for _ in range(2):
            with self.assertRaises(OSError):
                att.member_dir()
        self.assertEqual([n for n in os.listdir(self.tmp.name)
                          if n.startswith("mbroker.")], [])
        att.detach()

    def test_member_not_a_file_is_refused(self):
        """A directory's descriptor for a member (of its size, 0) is
        refused: member_dir's link to it would lead "a/x" out."""
        self.fake.forged["forged"] = [("a", {"dir": "/proc/self"}),
                                      ("b", b"x")]
        before = open_fds()
        with self.assertRaises(mbroker.BrokerError) as cm:
            self.client.attach("forged", keep_fds=True)
        self.assertEqual(cm.exception.code, "protocol_error")
        self.assertEqual(settled_fds(before), before)

    def test_follow_replace_keeps_keep_fds(self):
        att = self.client.attach("b", keep_fds=True)
        self.fake.generation = 2
        new = self.client.follow_replace(
            att, mbroker.Event("replaced", "b", 2, 5000, 1))
        self.assertIsNot(new, att)
        self.assertTrue(new.keep_fds)
        self.assertIsNotNone(new.member("sub/file").fd)
        self.assertIsNone(att.member("sub/file").fd)

    def test_populate_fills_the_page_tables(self):
        att = self.client.attach("b")
        rss, _ = resident_kb(att)
        self.assertEqual(rss, 0)
        att.detach()
        att = self.client.attach("b", populate=True)
        rss, size = resident_kb(att)
        self.assertGreater(size, 0)
        self.assertEqual(rss, size)
        self.fake.generation = 2
        new = self.client.follow_replace(
            att, mbroker.Event("replaced", "b", 2, 5000, 1))
        self.assertIsNot(new, att)
        self.assertEqual(resident_kb(new), (size, size))

    def test_populate_without_the_madvise_reads_each_page(self):
        # A kernel before 5.14 answers an unknown advice with EINVAL.
        unknown = mmap.MADV_HUGEPAGE + 1000
        old, mbroker._MADV_POPULATE_READ = mbroker._MADV_POPULATE_READ, unknown
        self.addCleanup(setattr, mbroker, "_MADV_POPULATE_READ", old)
        att = self.client.attach("b", populate=True)
        rss, size = resident_kb(att)
        self.assertEqual(rss, size)

    def test_single_file_is_one_member(self):
        before = open_fds()
        att = self.client.attach("m")
        self.assertEqual(bytes(att.data), bytes([1]) * SIZE)
        self.assertEqual([m.name for m in att.members], ["m"])
        self.assertEqual(bytes(att.members[0].data), bytes([1]) * SIZE)
        self.assertIsNone(att.fd)
        att.detach()
        self.assertEqual(settled_fds(before), before)
        att = self.client.attach("m", keep_fds=True)
        with open(att.path, "rb") as f:
            self.assertEqual(f.read(), bytes([1]) * SIZE)
        with open(os.path.join(att.member_dir(), "m"), "rb") as f:
            self.assertEqual(f.read(), bytes([1]) * SIZE)


if __name__ == "__main__":
    unittest.main()
