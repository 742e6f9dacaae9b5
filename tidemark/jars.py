"""The Java artifacts tidemark runs (Apache Kafka broker, Flink's Kafka connector), pinned.

Why a lock file and not a pom: the product stays pom-free, yet every jar that reaches a
classpath must be the one reviewed. `flink-conf/jars.lock` lists each jar with its SHA-256;
`fetch` resolves the `root` lines with Maven (`mvn dependency:get`, which also brings their
dependencies into the local Maven repository, a cache shared by every checkout), checks every
listed jar against its checksum and copies it to `.tidemark/jars/<role>/`. A jar whose bytes
differ from the lock fails the fetch, naming the artifact.

    python -m tidemark.jars fetch     # bootstrap runs this; a second run only checks
    python -m tidemark.jars lock      # rewrite the checksums after changing a root
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = REPO_ROOT / "flink-conf" / "jars.lock"
JARS_DIR_ENV_VAR = "TIDEMARK_JARS_DIR"  # where fetched jars go (default .tidemark/jars)
KAFKA_BROKER = "kafka-broker"
FLINK_CONNECTOR = "flink-connector"


class JarError(RuntimeError):
    """A pinned jar is missing, cannot be fetched or does not match its checksum."""


@dataclass(frozen=True)
class Artifact:
    """One Maven artifact of the lock file."""

    role: str
    coordinates: str  # group:artifact:version
    sha256: str = ""  # empty on `root` lines

    @property
    def file_name(self) -> str:
        _, artifact, version = self.coordinates.split(":")
        return f"{artifact}-{version}.jar"

    def repository_path(self, repository: Path) -> Path:
        """Where Maven keeps it in a local repository."""
        group, artifact, version = self.coordinates.split(":")
        return repository / group.replace(".", "/") / artifact / version / self.file_name


def read_lock(path: Path = LOCK_FILE) -> tuple[list[Artifact], list[Artifact]]:
    """(roots, pinned jars) of the lock file."""
    roots: list[Artifact] = []
    pinned: list[Artifact] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        if line[0] == "root" and len(line) == 3:
            roots.append(Artifact(line[1], line[2]))
        elif len(line) == 3 and line[1].count(":") == 2 and len(line[2]) == 64:
            pinned.append(Artifact(*line))
        else:
            raise JarError(f"{path}:{number}: expected '<role> <group:artifact:version> <sha256>'")
    return roots, pinned


def jars_dir() -> Path:
    """Where fetched jars are copied, one folder per role."""
    return Path(os.environ.get(JARS_DIR_ENV_VAR) or REPO_ROOT / ".tidemark" / "jars")


def local_repository() -> Path:
    """Maven's local repository (settings.xml overrides are not read: keep the default)."""
    return Path(os.environ.get("MAVEN_REPO_LOCAL") or Path.home() / ".m2" / "repository")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mvn_get(coordinates: str, transitive: bool) -> None:
    """`mvn dependency:get` one artifact into the local repository."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarError("mvn not found: install Maven (apt-get install -y maven) to fetch jars")
    argv = [
        mvn, "-q", "-B", "dependency:get",
        f"-Dartifact={coordinates}",
        f"-Dtransitive={'true' if transitive else 'false'}",
        f"-Dmaven.repo.local={local_repository()}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise JarError(f"mvn dependency:get {coordinates} failed:\n" + "\n".join(tail))


def fetch(lock: Path = LOCK_FILE) -> Path:
    """Make every pinned jar present and verified under `jars_dir()`; return that folder."""
    roots, pinned = read_lock(lock)
    target = jars_dir()
    missing = [a for a in pinned if not _verified_copy(a, target)]
    if not missing:
        return target
    repository = local_repository()
    if any(not a.repository_path(repository).is_file() for a in missing):
        for root in roots:
            mvn_get(root.coordinates, transitive=True)
    for artifact in missing:
        source = artifact.repository_path(repository)
        if not source.is_file():
            mvn_get(artifact.coordinates, transitive=False)
        actual = sha256_of(source)
        if actual != artifact.sha256:
            raise JarError(
                f"{artifact.coordinates}: sha256 {actual} does not match the lock's "
                f"{artifact.sha256} ({lock})"
            )
        destination = target / artifact.role / artifact.file_name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination.with_suffix(".part"))
        destination.with_suffix(".part").replace(destination)
    return target


def _verified_copy(artifact: Artifact, target: Path) -> bool:
    copy = target / artifact.role / artifact.file_name
    return copy.is_file() and sha256_of(copy) == artifact.sha256


def classpath(role: str, lock: Path = LOCK_FILE) -> list[Path]:
    """The fetched jars of one role; fails naming the command to run when any is missing."""
    _, pinned = read_lock(lock)
    paths = [jars_dir() / role / a.file_name for a in pinned if a.role == role]
    absent = [p.name for p in paths if not p.is_file()]
    if absent or not paths:
        raise JarError(
            f"{role} jars missing under {jars_dir() / role} ({', '.join(absent[:3]) or role}): "
            "run `bash scripts/bootstrap.sh` (or `python -m tidemark.jars fetch`)"
        )
    return paths


def connector_jar() -> Path:
    """Flink's SQL Kafka connector (a shaded jar: the only one of its role)."""
    return classpath(FLINK_CONNECTOR)[0]


def lock(path: Path = LOCK_FILE) -> None:
    """Rewrite the checksums of the pinned jars from the local repository (after `fetch`)."""
    _, pinned = read_lock(path)
    repository = local_repository()
    lines = [
        line
        for line in path.read_text().splitlines()
        if line.startswith("#") or line.startswith("root ") or not line.strip()
    ]
    for artifact in pinned:
        digest = sha256_of(artifact.repository_path(repository))
        lines.append(f"{artifact.role:16} {artifact.coordinates} {digest}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    command = (sys.argv[1:] if argv is None else argv) or ["fetch"]
    try:
        if command[0] == "fetch":
            print(f"jars: verified under {fetch()}")
        elif command[0] == "lock":
            lock()
        else:
            print("usage: python -m tidemark.jars fetch | lock", file=sys.stderr)
            return 2
    except JarError as exc:
        print(f"jars: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
