# SPDX-License-Identifier: MIT
"""A Python worker following a replaced model, against a fake broker
(tests/tools/fake_broker.py: attaches get a memfd whose every byte is the
generation, every attach and detach is logged in order, events are sent
when the test asks).  Checked: the "replaced" event's fields,
follow_replace attaching the new generation before it detaches the old
one, the old attachment untouched and readable when the new attach is
refused, and nothing done for an event not about it."""
import os
import select
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tests", "tools"))
import mbroker  # noqa: E402
from fake_broker import SIZE, FakeBroker  # noqa: E402


def replaced(old, new, model="m"):
    return {"event": "replaced", "model": model, "old_generation": old,
            "generation": new, "timeout_ms": 5000}


class FollowReplaceTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.fake = FakeBroker(os.path.join(self.tmp.name, "b.sock"))
        self.addCleanup(self.fake.close)
        self.client = mbroker.connect(os.path.join(self.tmp.name, "b.sock"),
                                      timeout=10)
        self.client.timeout = 10
        self.addCleanup(self.client.close)

    def next_event(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            select.select([self.client], [], [], 0.1)
            for event in self.client.events():
                return event
        self.fail("no event within 10 s")

    def reads(self, att, generation):
        return bytes(att.data) == bytes([generation]) * SIZE

    def test_replaced_event_is_parsed(self):
        self.fake.event(**replaced(1, 2))
        event = self.next_event()
        self.assertEqual(event, mbroker.Event("replaced", "m", 2, 5000, 1))
        self.fake.event(event="unload", model="m", generation=2,
                        timeout_ms=100)
        self.assertIsNone(self.next_event().old_generation)

    def test_attaches_new_before_detaching_old(self):
        old = self.client.attach("m")
        self.fake.generation = 2
        self.fake.event(**replaced(1, 2))
        new = self.client.follow_replace(old, self.next_event())
        self.assertIsNot(new, old)
        self.assertEqual(new.generation, 2)
        self.assertTrue(self.reads(new, 2))
        self.assertEqual(self.client.attached, 1)
        self.assertEqual(self.fake.log,
                         ["attach m 1 #1", "attach m 2 #2", "detach #1"])

    def test_refused_attach_keeps_old(self):
        old = self.client.attach("m")
        self.fake.generation, self.fake.refuse = 2, "unloading"
        self.fake.event(**replaced(1, 2))
        event = self.next_event()
        with self.assertRaises(mbroker.BrokerError) as cm:
            self.client.follow_replace(old, event)
        self.assertEqual(cm.exception.code, "unloading")
        self.assertEqual(old.generation, 1)
        self.assertTrue(self.reads(old, 1))
        self.assertEqual(self.client.attached, 1)
        self.assertEqual(self.fake.log, ["attach m 1 #1"])
        # Retried once the broker grants it, it moves on.
        self.fake.refuse = None
        new = self.client.follow_replace(old, event)
        self.assertTrue(self.reads(new, 2))
        self.assertEqual(self.fake.log,
                         ["attach m 1 #1", "attach m 2 #2", "detach #1"])

    def test_events_not_about_it_do_nothing(self):
        att = self.client.attach("m")
        self.fake.generation = 5
        for event in (mbroker.Event("replaced", "other", 5, 5000, 1),
                      mbroker.Event("replaced", "m", 1, 5000, 0),
                      mbroker.Event("replaced", "m", 0, 5000, 0),
                      mbroker.Event("unload", "m", 5, 5000),
                      mbroker.Event("shutdown", timeout_ms=5000)):
            self.assertIs(self.client.follow_replace(att, event), att)
        self.assertTrue(self.reads(att, 1))
        self.assertEqual(self.fake.log, ["attach m 1 #1"])


if __name__ == "__main__":
    unittest.main()
