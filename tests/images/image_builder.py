"""Build images/*.Containerfile with buildah, offline, and run commands inside the images.

No base image can be pulled here, and the tests run without a network: the official
`python:3.11-slim-bookworm` base is stood in for by a Debian bookworm made with debootstrap (cached
under CACHE_ROOT, keyed by what it contains; making it needs Debian's mirror once: `make image-base`),
uv's image by one holding this machine's uv binary, and the package index by this machine's uv cache
(mounted into the build, with UV_OFFLINE=1): every RUN installs exactly what uv.lock pins, from there.
buildah runs with `--isolation chroot --storage-driver vfs` (its storage under CACHE_ROOT too, so the
layer cache makes a second run fast).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from mlplane._generated import REPO_ROOT

CACHE_ROOT = Path(os.environ.get("MLPLANE_IMAGE_CACHE", "/var/tmp/mlplane-images"))
IMAGES_DIR = REPO_ROOT / "images"
UV_BIN = REPO_ROOT / ".venv" / "bin" / "uv"

# What the stand-in base holds; its cache key is derived from this. python:3.11-slim-bookworm's Python is
# built --enable-shared: libpython3.11.so.1.0 is there, and Triton's Python backend stub (mlplane-triton)
# links against it; Debian's python3 does not bring it, so the stand-in adds it.
BASE_SUITE, BASE_VARIANT = "bookworm", "minbase"
BASE_PACKAGES = ("python3", "python3-venv", "libpython3.11")
BASE_MIRROR = os.environ.get("MLPLANE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the kubelet and the runtime itself put into a container's /etc; not the application's writes.
RUNTIME_FILES = {"etc/hosts", "etc/resolv.conf", "etc/hostname"}


class BuildahError(RuntimeError):
    pass


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BuildahError(f"{tool} is not installed: the image tests need the Debian package {package!r} "
                           f"(`make system-deps`, or apt-get install {package})")
    return path


def buildah_cmd(*args: str) -> list[str]:
    return [_need("buildah", "buildah"), "--root", str(CACHE_ROOT / "storage"), "--runroot",
            str(CACHE_ROOT / "run"), "--storage-driver", "vfs", *args]


def buildah(*args: str, timeout: float = 1800) -> str:
    proc = subprocess.run(buildah_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BuildahError(f"buildah {' '.join(args[:2])} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


def image_exists(name: str) -> bool:
    proc = subprocess.run(buildah_cmd("inspect", "--type", "image", name), capture_output=True, check=False)
    return proc.returncode == 0


def base_key() -> str:
    spec = f"{BASE_SUITE}|{BASE_VARIANT}|{','.join(BASE_PACKAGES)}|{BASE_MIRROR}"
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def base_rootfs_tar() -> Path:
    """Debian bookworm minbase + python3 as a tarball (debootstrap, ~45 s; cached)."""
    tar = CACHE_ROOT / f"base-{base_key()}.tar"
    if tar.exists():
        return tar
    debootstrap = _need("debootstrap", "debootstrap")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE_ROOT / f"base-{base_key()}.rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    proc = subprocess.run([debootstrap, f"--variant={BASE_VARIANT}", f"--include={','.join(BASE_PACKAGES)}",
                           BASE_SUITE, str(rootfs), BASE_MIRROR], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(rootfs, ignore_errors=True)
        raise BuildahError(
            f"debootstrap could not make the offline base image at {tar} (it needs the Debian mirror "
            f"{BASE_MIRROR} once; the tests run without a network: run `make image-base` first):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    partial = tar.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
    partial.rename(tar)
    shutil.rmtree(rootfs, ignore_errors=True)
    return tar


def base_image() -> str:
    """The stand-in for python:3.11-slim-bookworm, as a local image."""
    name = f"localhost/mlplane-test-base:{base_key()}"
    if not image_exists(name):
        ctx = CACHE_ROOT / "base-context"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        os.link(base_rootfs_tar(), ctx / "rootfs.tar")
        (ctx / "Containerfile").write_text(
            "FROM scratch\nADD rootfs.tar /\n"
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\n"
            'CMD ["python3"]\n', encoding="utf-8")
        buildah("bud", "--isolation", "chroot", "-t", name, str(ctx))
        shutil.rmtree(ctx, ignore_errors=True)
    return name


def uv_image() -> str:
    """The stand-in for ghcr.io/astral-sh/uv: this machine's uv binary at /uv, as uv's image has it."""
    if not UV_BIN.exists():
        raise BuildahError(f"{UV_BIN} is missing: run `make venv` (the image builds use the venv's uv)")
    version = subprocess.run([str(UV_BIN), "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    name = f"localhost/mlplane-test-uv:{version}"
    if not image_exists(name):
        ctx = CACHE_ROOT / "uv-context"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        shutil.copy2(UV_BIN, ctx / "uv")
        (ctx / "Containerfile").write_text("FROM scratch\nCOPY uv /uv\n", encoding="utf-8")
        buildah("bud", "--isolation", "chroot", "-t", name, str(ctx))
        shutil.rmtree(ctx, ignore_errors=True)
    return name


def uv_cache_dir() -> Path:
    out = subprocess.run([str(UV_BIN), "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


# What the Containerfiles COPY from the repository (the build context, less .containerignore).
CONTEXT = ("pyproject.toml", "uv.lock", "README.md", "platform", "operators", "pipelines", "charts")


def context_key(image: str) -> str:
    """A digest of everything an image is built from: its Containerfile, the sources, the base and uv."""
    digest = hashlib.sha256()
    digest.update((IMAGES_DIR / f"{image}.Containerfile").read_bytes())
    digest.update(f"{base_key()}|{uv_image()}".encode())
    for entry in CONTEXT:
        root = REPO_ROOT / entry
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            digest.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build(image: str) -> str:
    """Build images/<image>.Containerfile from the repository, offline; returns the local tag.

    vfs copies the whole root file system for every layer, so there is no per-step layer cache: an
    image is built in one go and kept under a tag derived from what it is built from (context_key);
    an unchanged tree reuses it, a new build drops the image's older tags.
    """
    containerfile = IMAGES_DIR / f"{image}.Containerfile"
    repo, key = f"localhost/{image}", context_key(image)
    tag = f"{repo}:{key}"
    if image_exists(tag):
        return tag
    buildah("bud", "--isolation", "chroot", "--pull=never", "-f", str(containerfile), "-t", tag,
            "--build-arg", f"BASE_IMAGE={base_image()}", "--build-arg", f"UV_IMAGE={uv_image()}",
            "--build-arg", "UV_OFFLINE=1", "-v", f"{uv_cache_dir()}:/root/.cache/uv",
            str(REPO_ROOT))
    # buildah keeps the working container of a stage only copied from (uv's): remove it.
    for line in buildah("containers", "--format", "{{.ContainerName}}", "--noheading").splitlines():
        if line.startswith("mlplane-test-uv-working-container"):
            subprocess.run(buildah_cmd("rm", line), capture_output=True, check=False)
    for line in buildah("images", "--format", "{{.Name}}:{{.Tag}}", "--noheading").splitlines():
        if line.startswith(f"{repo}:") and line != tag:
            subprocess.run(buildah_cmd("rmi", line), capture_output=True, check=False)
    return tag


def image_config(tag: str) -> dict:
    import json

    return json.loads(buildah("inspect", "--type", "image", tag))


@contextmanager
def container(tag: str) -> Iterator[str]:
    name = buildah("from", "--pull=never", tag).strip().splitlines()[-1]
    try:
        yield name
    finally:
        subprocess.run(buildah_cmd("rm", name), capture_output=True, check=False)


def run_argv(ctr: str, command: Sequence[str], *, env: Mapping[str, str] = {}, user: str = "1000:1000",
             mounts: Sequence[str] = (), shm_size: str | None = None) -> list[str]:
    """`buildah run` of `command` in container `ctr`, as `user`, with `env` and `mounts` (src:dst[:ro]).

    ``shm_size`` (a Kubernetes quantity): the container's /dev/shm is a tmpfs of that size, as a container
    runtime gives a pod (64Mi) or the kubelet mounts a ``medium: Memory`` emptyDir there. `buildah run
    --isolation chroot` binds the host's /dev/shm over any volume at that path, so the run goes into a
    mount namespace of its own whose /dev/shm is that tmpfs (needs root, as the image tests do)."""
    args = ["run", "--isolation", "chroot", "--user", user]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    for mount in mounts:
        args += ["-v", mount]
    argv = buildah_cmd(*args, ctr, "--", *command)
    if shm_size is None:
        return argv
    mount = f'mount -t tmpfs -o size={quantity_bytes(shm_size)},mode=1777 tmpfs /dev/shm && exec "$@"'
    return [_need("unshare", "util-linux"), "--mount", "--propagation", "private", "sh", "-c", mount, "sh", *argv]


def stop(proc: subprocess.Popen) -> None:
    """Stop a `buildah run` started with start_new_session=True and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def empty_dir(tmp_path: Path, name: str) -> Path:
    """A world-writable empty directory, as a pod's emptyDir (the test runs as root, the pod as 1000)."""
    path = tmp_path / name
    path.mkdir()
    path.chmod(0o1777)
    return path


POD_SHM = "64Mi"  # what containerd and Docker give a container as /dev/shm


def pod_mounts(runtime_spec: dict, container: dict, root: Path, read_only: Mapping[str, Path]) -> tuple[list[str], str]:
    """A ServingRuntime container's mounts as its pod has them (`runtime_spec`: the runtime's spec), /dev/shm's size.

    ``read_only`` maps mount paths to directories bound read-only (the storage initializer's /mnt/models, as
    KServe mounts it); each emptyDir the runtime mounts is an empty directory (made under ``root``); /tmp is
    read-only when no volume is mounted there (readOnlyRootFilesystem: it is part of the root file system);
    /dev/shm is the sizeLimit of the ``medium: Memory`` emptyDir mounted there, else the container runtime's
    64Mi. A volume of another kind fails the test: it cannot provide it."""
    volumes = {v["name"]: v for v in runtime_spec.get("volumes", [])}
    mounts, shm = [f"{src}:{dst}:ro" for dst, src in read_only.items()], POD_SHM
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        empty = volume.get("emptyDir")
        if mount["mountPath"] == "/dev/shm" and empty is not None and empty.get("medium") == "Memory":
            assert "sizeLimit" in empty, f"/dev/shm volume {mount['name']!r} without a sizeLimit: {volume}"
            shm = empty["sizeLimit"]
        elif empty is not None and not empty.get("medium"):
            mounts.append(f"{empty_dir(root, mount['name'])}:{mount['mountPath']}")
        else:
            raise AssertionError(f"the test cannot provide volume {mount['name']!r} ({volume}) of {container['name']}")
    if "/tmp" not in [m["mountPath"] for m in container.get("volumeMounts", [])]:
        frozen = root / "read-only-tmp"
        frozen.mkdir()
        mounts.append(f"{frozen}:/tmp:ro")
    return mounts, shm


_QUANTITY = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity (``64Mi``, ``1Gi``, ``500M``, ``1048576``) in bytes."""
    number = quantity.rstrip("KMGikm")
    return int(float(number) * _QUANTITY[quantity[len(number):]])


def changed_outside_tmp(ctr: str, since: Path) -> list[str]:
    """Files of the container's root file system modified after `since` (outside /tmp and mounts)."""
    root = Path(buildah("mount", ctr).strip())
    try:
        out = subprocess.run(["find", str(root), "-xdev", "-newer", str(since), "-not", "-type", "d"],
                             capture_output=True, text=True, check=True).stdout.split()
    finally:
        subprocess.run(buildah_cmd("umount", ctr), capture_output=True, check=False)
    rel = [str(Path(p).relative_to(root)) for p in out]
    return sorted(p for p in rel if not p.startswith(("tmp/", "mnt/", "proc/", "sys/", "dev/", "run/"))
                  and p not in RUNTIME_FILES)
