import os

from explorer import cache


def test_manifest_detects_missing_changed_and_unfinished(tmp_path):
    d = tmp_path / "entry"
    d.mkdir()
    (d / "a.bin").write_bytes(b"abc" * 1000)
    assert cache.verify_manifest(d) == "no manifest (an earlier write did not finish)"
    cache.write_manifest(d, {"note": 1})
    assert cache.verify_manifest(d) is None
    data = bytearray((d / "a.bin").read_bytes())
    data[10] ^= 0xFF
    (d / "a.bin").write_bytes(bytes(data))
    assert "a.bin does not match" in cache.verify_manifest(d)
    (d / "a.bin").unlink()
    assert cache.verify_manifest(d) == "missing a.bin"


def test_publish_dir_replaces_and_leaves_no_temporaries(tmp_path):
    final = tmp_path / "models" / "m"
    for content in (b"one", b"two"):
        tmp = cache.temporary_dir_beside(final)
        (tmp / "w").write_bytes(content)
        cache.publish_dir(tmp, final)
    assert (final / "w").read_bytes() == b"two"
    assert os.listdir(final.parent) == ["m"]


def test_write_file_atomic_keeps_old_file_when_interrupted(tmp_path):
    target = tmp_path / "x.json"
    cache.write_file_atomic(target, b"old")

    try:
        cache.write_file_atomic(target, None)  # type: ignore[arg-type]  # fails mid-write
    except TypeError:
        pass
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_sha256_of_parts_equals_sha256_of_whole(tmp_path):
    (tmp_path / "p1").write_bytes(b"hello ")
    (tmp_path / "p2").write_bytes(b"world")
    (tmp_path / "whole").write_bytes(b"hello world")
    assert cache.sha256_of([tmp_path / "p1", tmp_path / "p2"]) == cache.sha256_of([tmp_path / "whole"])


def test_cache_root_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    assert (tmp_path / "c").is_dir()
