"""Directory cache entries (bench.cache_tree) and JSON entries (Cache.save_json/load_json): checksummed,
atomic, unique temp names; corruption named and rebuilt; K processes building one entry at once."""
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench import cache_tree
from bench.context import Cache, checksum_path

REPO = Path(__file__).resolve().parents[1]


def _build(final: Path, payload: str) -> Path:
    d = cache_tree.verified(final)
    if d is not None:
        return d
    tmp = cache_tree.temp_dir(final)
    (tmp / "sub").mkdir()
    (tmp / "a.txt").write_text(payload)
    (tmp / "sub" / "b.bin").write_bytes(payload.encode() * 1000)
    return cache_tree.publish(tmp, final)


def test_tree_round_trip_and_truncation_is_rebuilt(tmp_path, capfd):
    final = tmp_path / "cache" / "model" / "k1"
    assert _build(final, "one") == final
    assert cache_tree.problem(final) is None and (final / cache_tree.MANIFEST).is_file()
    b = final / "sub" / "b.bin"
    b.write_bytes(b.read_bytes()[:100])  # truncated
    assert "sub/b.bin" in cache_tree.problem(final)
    assert cache_tree.verified(final) is None
    err = capfd.readouterr().err
    assert str(final) in err and "corrupt" in err and "rebuilding" in err
    assert not final.exists()  # moved aside and deleted
    _build(final, "two")
    assert (final / "a.txt").read_text() == "two" and cache_tree.problem(final) is None
    assert not [p for p in final.parent.iterdir() if p.name != "k1"]  # no temp or corrupt copies left


def test_tree_without_manifest_or_with_extra_file_is_not_trusted(tmp_path):
    final = tmp_path / "k"
    _build(final, "x")
    (final / "planted.bin").write_bytes(b"\x80\x04")
    assert "planted.bin" in cache_tree.problem(final)
    (final / "planted.bin").unlink()
    (final / cache_tree.MANIFEST).unlink()
    assert "no SHA256SUMS" in cache_tree.problem(final)


def test_k_processes_build_one_tree(tmp_path):
    """K processes build the same entry at once: all return an intact directory, one copy remains."""
    final = tmp_path / "cache" / "t" / "key"
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, sys, time, pathlib, json
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_cache_tree import _build
        from bench import cache_tree
        while not os.path.exists({str(go)!r}):
            time.sleep(0.005)
        d = _build(pathlib.Path({str(final)!r}), "w" + sys.argv[1])
        print(json.dumps({{"ok": cache_tree.problem(d) is None, "a": (d / "a.txt").read_text()}}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    res = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert all(r["ok"] for r in res)
    assert len({r["a"] for r in res}) == 1  # every process sees the one published copy
    assert sorted(p.name for p in final.parent.iterdir()) == ["key"]  # no temp dirs left


def test_json_entry_is_checksummed_and_a_truncated_one_recomputed(tmp_path, capfd):
    c = Cache(tmp_path / "cache")
    p = c.save_json("layer_card", "k", json.dumps({"rows": [1, 2, 3]}))
    assert checksum_path(p).is_file()
    assert c.load_json("layer_card", "k") == {"rows": [1, 2, 3]}
    p.write_bytes(p.read_bytes()[:5])
    assert c.load_json("layer_card", "k") is None
    err = capfd.readouterr().err
    assert str(p) in err and "corrupt" in err
    c.save_json("layer_card", "k", json.dumps({"rows": []}))
    assert c.load_json("layer_card", "k") == {"rows": []}


def test_doctor_finds_and_removes_a_corrupt_tree(tmp_path):
    from bench import doctor

    c = Cache(tmp_path / "cache")
    good, bad = c.root / "qwen3_tiny" / "good", c.root / "qwen3_tiny" / "bad"
    _build(good, "g")
    _build(bad, "b")
    (bad / "a.txt").write_text("edited")
    report = doctor.examine(None, c)
    assert [p for p, _ in report.corrupt] == [bad] and report.checked_entries == 2
    assert any("bad" in line and "deleted corrupt cache directory" in line for line in doctor.fix(report, None))
    assert not bad.exists() and cache_tree.problem(good) is None
