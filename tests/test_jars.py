"""tidemark.jars: the lock file's rules, and a jar whose bytes differ from the lock failing.

Unit tests on a private lock and local repository (no Maven call: every jar is already in
the repository). The real fetch runs in bootstrap, and every stack test runs on its jars.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tidemark import jars


def repository_with(tmp_path: Path, coordinates: str, content: bytes) -> Path:
    repository = tmp_path / "m2"
    path = jars.Artifact("r", coordinates).repository_path(repository)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return repository


def lock_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jars.lock"
    path.write_text(text)
    return path


def test_pinned_lock_covers_broker_and_connector() -> None:
    roots, pinned = jars.read_lock()
    assert {r.coordinates for r in roots} >= {
        "org.apache.kafka:kafka_2.13:4.1.1",
        "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2",
    }
    assert {p.role for p in pinned} == {jars.KAFKA_BROKER, jars.FLINK_CONNECTOR}
    assert all(len(p.sha256) == 64 for p in pinned)
    assert len({p.coordinates for p in pinned}) == len(pinned)


def test_fetch_copies_verified_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"PK\x03\x04 a jar"
    monkeypatch.setenv("MAVEN_REPO_LOCAL", str(repository_with(tmp_path, "g.h:a:1.0", content)))
    monkeypatch.setenv(jars.JARS_DIR_ENV_VAR, str(tmp_path / "out"))
    digest = hashlib.sha256(content).hexdigest()
    lock = lock_file(tmp_path, f"root tool g.h:a:1.0\ntool g.h:a:1.0 {digest}\n")
    assert jars.fetch(lock) == tmp_path / "out"
    assert (tmp_path / "out" / "tool" / "a-1.0.jar").read_bytes() == content
    assert jars.classpath("tool", lock) == [tmp_path / "out" / "tool" / "a-1.0.jar"]


def test_checksum_mismatch_names_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAVEN_REPO_LOCAL", str(repository_with(tmp_path, "g.h:a:1.0", b"evil")))
    monkeypatch.setenv(jars.JARS_DIR_ENV_VAR, str(tmp_path / "out"))
    lock = lock_file(tmp_path, f"tool g.h:a:1.0 {'0' * 64}\n")
    with pytest.raises(jars.JarError, match=r"g\.h:a:1\.0: sha256 .* does not match"):
        jars.fetch(lock)
    assert not (tmp_path / "out" / "tool" / "a-1.0.jar").exists()


def test_missing_jars_say_how_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jars.JARS_DIR_ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(jars.JarError, match=r"run `bash scripts/bootstrap\.sh`"):
        jars.classpath(jars.KAFKA_BROKER)


def test_malformed_lock_line_is_named(tmp_path: Path) -> None:
    lock = lock_file(tmp_path, "# header\ntool g.h:a:1.0 not-a-checksum\n")
    with pytest.raises(jars.JarError, match=r"jars\.lock:2"):
        jars.read_lock(lock)
