"""Four processes at once on one Maildir: an SMTP-like deliverer, two
sessions changing flags (each owning its own flags), and one that removes
messages and marks others seen, all three taking UID listings. Afterwards
every file and every UID is checked."""

import json
import multiprocessing
import os
import random
import time
import traceback

from baremail.maildir import Maildir

RUN_FOR = 2.5   # seconds each worker runs
INITIAL = 40


def _worker(kind, root, out, seed):
    result = {"error": None}
    try:
        result.update(WORKERS[kind](root, random.Random(seed)))
    except BaseException:
        result["error"] = traceback.format_exc()
    with open(out, "w") as handle:
        json.dump(result, handle)
    os._exit(0)


def _deliverer(root, rng):
    box = Maildir(root, "h")
    keys = []
    deadline = time.monotonic() + RUN_FOR
    while time.monotonic() < deadline:
        keys.append(box.deliver([b"X-Tag: d%d\r\n\r\nbody\r\n" % len(keys)]))
        time.sleep(rng.uniform(0, 0.01))
    return {"delivered": keys}


class Observer:
    """Checks each listing as it comes and keeps key <-> UID as seen."""

    def __init__(self):
        self.uid_of, self.key_of, self.validities = {}, {}, set()
        self.next_uid = 0
        self.last = None

    def see(self, listing):
        if listing is self.last:
            return
        self.last = listing
        self.validities.add(listing.validity)
        uids = [message.uid for message in listing.messages]
        assert uids == sorted(set(uids)), "UIDs not strictly ascending in a listing"
        assert all(uid < listing.next_uid for uid in uids), "a UID at or past next_uid"
        assert listing.next_uid >= self.next_uid, "next_uid went down"
        self.next_uid = listing.next_uid
        for message in listing.messages:
            assert self.uid_of.setdefault(message.key, message.uid) == message.uid, "a key changed UID"
            assert self.key_of.setdefault(message.uid, message.key) == message.key, "a UID was reused"

    def report(self):
        return {"uid_of": self.uid_of, "validities": sorted(self.validities)}


def _flagger(flag, keyword, letter):
    def run(root, rng):
        box = Maildir(root, "h")
        observer = Observer()
        wanted = {}   # key -> (flag set, keyword set), as last reported applied
        gone = 0
        deadline = time.monotonic() + RUN_FOR
        while time.monotonic() < deadline:
            listing = box.uid_listing()
            observer.see(listing)
            if not listing.messages:
                continue
            message = rng.choice(listing.messages)
            have = wanted.get(message.key, (False, False))
            want = (not have[0], rng.random() < 0.5)
            add = [name for name, on in zip((flag, keyword), want) if on]
            remove = [name for name, on in zip((flag, keyword), want) if not on]
            changed = box.set_flags(message, add=add, remove=remove)
            if changed is None:
                gone += 1
                continue
            names = box.flag_names(changed.flags)
            assert (flag in names, keyword in names) == want, (changed, want)
            assert (letter in changed.flags) == want[0]
            wanted[message.key] = want
        return {"wanted": wanted, "gone": gone, **observer.report()}
    return run


def _remover(root, rng):
    box = Maildir(root, "h")
    observer = Observer()
    removed, seen = [], []
    deadline = time.monotonic() + RUN_FOR
    while time.monotonic() < deadline:
        listing = box.uid_listing()
        observer.see(listing)
        if not listing.messages:
            continue
        message = rng.choice(listing.messages)
        if rng.random() < 0.4:
            if box.remove(message):
                removed.append(message.key)
        else:
            box.mark_seen(message)
            seen.append(message.key)
        time.sleep(rng.uniform(0, 0.004))
    return {"removed": removed, "seen": seen, **observer.report()}


WORKERS = {
    "deliver": _deliverer,
    "flag": _flagger("\\Flagged", "$One", "F"),
    "answer": _flagger("\\Answered", "$Two", "R"),
    "remove": _remover,
}


def test_concurrent_deliveries_flag_changes_removals_and_uid_listings(tmp_path):
    root = str(tmp_path / "md")
    box = Maildir(root, "h")
    initial = [box.deliver([b"X-Tag: i%d\r\n\r\nbody\r\n" % n]) for n in range(INITIAL)]
    first = box.uid_listing()
    assert [m.uid for m in first] == list(range(1, INITIAL + 1))

    ctx = multiprocessing.get_context("fork")
    workers = {}
    for seed, kind in enumerate(WORKERS):
        out = str(tmp_path / f"{kind}.json")
        workers[kind] = (ctx.Process(target=_worker, args=(kind, root, out, seed)), out)
    for process, _ in workers.values():
        process.start()
    results = {}
    for kind, (process, out) in workers.items():
        process.join(RUN_FOR + 20)
        assert process.exitcode == 0, kind
        with open(out) as handle:
            results[kind] = json.load(handle)
        assert results[kind]["error"] is None, results[kind]["error"]

    delivered = results["deliver"]["delivered"]
    removed = results["remove"]["removed"]
    everything = initial + delivered
    assert len(set(everything)) == len(everything)
    assert len(set(removed)) == len(removed), "a message removed twice"
    assert set(removed) <= set(everything)

    # Every file: none lost, none duplicated, none left in tmp/.
    on_disk = {}
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(root, sub)):
            key, _, info = name.partition(":")
            assert key not in on_disk, f"two files for {key}"
            on_disk[key] = info[2:] if info[:2] == "2," else ""
    assert set(on_disk) == set(everything) - set(removed)
    assert os.listdir(os.path.join(root, "tmp")) == []

    # Every flag change reported applied is there; nothing else is.
    check = Maildir(root, "h")
    seen = set(results["remove"]["seen"])
    for key, letters in on_disk.items():
        names = set(check.flag_names(letters))
        for kind, flag, keyword in (("flag", "\\Flagged", "$One"), ("answer", "\\Answered", "$Two")):
            want = results[kind]["wanted"].get(key, (False, False))
            assert (flag in names, keyword in names) == tuple(want), (key, letters, kind)
        assert ("\\Seen" in names) == (key in seen), (key, letters)
        assert not names - {"\\Flagged", "\\Answered", "\\Seen", "$One", "$Two"}

    # Every UID: one UIDVALIDITY, the same UID for a key in every process,
    # never one UID for two keys, delivery order, the uidlist agreeing.
    final = check.uid_listing()
    merged = {key: message.uid for key, message in ((m.key, m) for m in first)}
    validities = {first.validity, final.validity}
    for kind in ("flag", "answer", "remove"):
        validities.update(results[kind]["validities"])
        for key, uid in results[kind]["uid_of"].items():
            assert merged.setdefault(key, uid) == uid, f"{key} has two UIDs"
    for message in final:
        assert merged.setdefault(message.key, message.uid) == message.uid
    assert validities == {first.validity}
    assert len(set(merged.values())) == len(merged), "a UID given to two keys"
    numbered = [merged[key] for key in everything if key in merged]
    assert numbered == sorted(numbered), "UIDs not in delivery order"
    assert set(on_disk) == {m.key for m in final}
    assert final.next_uid > max(merged.values())
    with open(os.path.join(root, "baremail-uidlist")) as handle:
        header, *lines = handle.read().splitlines()
    assert header.startswith(f"1 V{first.validity} N")
    written = [(int(uid), key) for uid, key in (line.split(" ", 1) for line in lines)]
    assert [uid for uid, _ in written] == sorted({uid for uid, _ in written})
    assert all(merged.get(key, uid) == uid for uid, key in written)
    assert set(on_disk) <= {key for _, key in written}
    assert len(written) < len(everything), "the uidlist was never compacted"
    # Enough happened for the test to mean something.
    assert len(delivered) > 50 and len(removed) > 20 and len(seen) > 20
    assert len(results["flag"]["wanted"]) > 20 and len(results["answer"]["wanted"]) > 20
