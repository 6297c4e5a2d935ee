"""`cmake --install` of a build: the four binaries, libaiq_producer (shared and static), its
header, aiq-producer.pc and the CMake package are in place, one version everywhere, and the
example examples/submit_one.c builds against the INSTALLED library three ways (pkg-config,
pkg-config --static, CMake find_package) and puts a job on the real broker."""
import glob
import os
import re
import shlex
import subprocess

import pytest

from aiqtest import BROKERS, BUILD, ROOT, run

BINARIES = ["aiq-worker", "aiq-submit", "aiq-admin", "bedrock-sim"]
PUBLIC = re.compile(r"^(aiq_producer_|aiq_results_|aiq_collector_|aiq_job_check(_ex)?$)")
EXAMPLE = os.path.join(ROOT, "examples", "submit_one.c")


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"project\(aiq\s+VERSION\s+([0-9]+\.[0-9]+\.[0-9]+)", f.read())
    assert m, "no project(aiq VERSION x.y.z) in CMakeLists.txt"
    return m.group(1)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    dest = tmp_path_factory.mktemp("prefix")
    r = run(["cmake", "--install", BUILD, "--prefix", str(dest)])
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def libdir(prefix):
    """lib or lib/<multiarch>, whichever GNUInstallDirs chose."""
    found = glob.glob(str(prefix / "lib*" / "**" / "libaiq_producer.a"), recursive=True)
    assert len(found) == 1, found
    return os.path.dirname(found[0])


def pkg_config(prefix, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir(prefix), "pkgconfig"))
    r = run(["pkg-config", *args, "aiq-producer"], env=env)
    assert r.returncode == 0, r.stderr
    return shlex.split(r.stdout)


def needed(path):
    out = run(["readelf", "-d", path]).stdout
    return re.findall(r"\(NEEDED\).*\[(.*)\]", out)


def test_install_puts_every_piece_in_place(prefix):
    lib = libdir(prefix)
    for b in BINARIES:
        assert os.access(prefix / "bin" / b, os.X_OK), b
    assert os.path.islink(os.path.join(lib, "libaiq_producer.so"))
    assert os.path.exists(os.path.join(lib, "libaiq_producer.so.0"))
    assert os.path.exists(os.path.join(lib, f"libaiq_producer.so.{project_version()}"))
    assert os.path.exists(prefix / "include" / "aiq" / "producer.h")
    assert os.path.exists(os.path.join(lib, "pkgconfig", "aiq-producer.pc"))
    for f in ("aiqConfig.cmake", "aiqConfigVersion.cmake", "aiqTargets.cmake"):
        assert os.path.exists(os.path.join(lib, "cmake", "aiq", f)), f


def test_one_version_everywhere(prefix):
    want = project_version()
    for b in BINARIES:
        r = run([str(prefix / "bin" / b), "--version"])
        assert r.returncode == 0, (b, r.stderr)
        # The Kafka clients also say which librdkafka they loaded (the rpath'd one or the
        # system's): the test matrix runs more than one.
        if b in ("aiq-worker", "aiq-submit", "aiq-admin"):
            assert re.fullmatch(rf"{b} {re.escape(want)} \(librdkafka \d+\.\d+\.\d+\)",
                                r.stdout.strip()), (b, r.stdout)
        else:
            assert r.stdout.strip() == f"{b} {want}", (b, r.stdout)
    assert pkg_config(prefix, "--modversion") == [want]


def test_shared_lib_exports_only_the_api(prefix):
    out = run(["nm", "-D", "--defined-only", os.path.join(libdir(prefix), "libaiq_producer.so")])
    names = [line.split()[-1] for line in out.stdout.splitlines() if " T " in line]
    assert "aiq_producer_submit" in names and "aiq_results_next" in names
    assert [n for n in names if not PUBLIC.match(n)] == []


def test_static_lib_is_complete(prefix):
    """Every aiq_* symbol libaiq_producer.a uses, it also defines (aiq_common folded in)."""
    out = run(["nm", os.path.join(libdir(prefix), "libaiq_producer.a")]).stdout
    defined = set(re.findall(r" [TDRB] (aiq_\w+)$", out, re.M))
    undefined = set(re.findall(r" U (aiq_\w+)$", out, re.M))
    assert "aiq_job_validate" in defined
    assert undefined - defined == set()


def read_job_ids(env, expect):
    records = env.read_all(env.job_topic("high"), expect, timeout=60)
    return {m.key().decode() for m in records}


def run_example(path, env, extra_env=None):
    r = run([path, BROKERS, env.prefix], env=dict(os.environ, **(extra_env or {})), timeout=60)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id), r.stdout
    return job_id


def test_example_builds_against_installed_library(prefix, aiq_env, tmp_path):
    lib = libdir(prefix)
    # 1. pkg-config, shared.
    shared = str(tmp_path / "submit_one")
    r = run(["cc", EXAMPLE, "-o", shared, *pkg_config(prefix, "--cflags", "--libs")])
    assert r.returncode == 0, r.stderr
    assert "libaiq_producer.so.0" in needed(shared)
    # 2. pkg-config --static: libaiq_producer.a plus what it needs, nothing of aiq at run time.
    static = str(tmp_path / "submit_one_static")
    r = run(["cc", EXAMPLE, "-o", static, *pkg_config(prefix, "--cflags"), "-Wl,--as-needed",
             "-Wl,-Bstatic", "-laiq_producer", "-Wl,-Bdynamic",
             *pkg_config(prefix, "--static", "--libs")])
    assert r.returncode == 0, r.stderr
    assert not [n for n in needed(static) if "aiq" in n], needed(static)
    # 3. CMake find_package(aiq), shared and static targets.
    proj = tmp_path / "cmake-consumer"
    proj.mkdir()
    (proj / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(consumer C)\n"
        f"find_package(aiq {project_version()} REQUIRED)\n"
        f"add_executable(submit_one_cmake {EXAMPLE})\n"
        "target_link_libraries(submit_one_cmake PRIVATE aiq::producer)\n"
        f"add_executable(submit_one_cmake_static {EXAMPLE})\n"
        "target_link_libraries(submit_one_cmake_static PRIVATE aiq::producer_static)\n")
    r = run(["cmake", "-S", str(proj), "-B", str(proj / "b"), f"-DCMAKE_PREFIX_PATH={prefix}"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["cmake", "--build", str(proj / "b")])
    assert r.returncode == 0, r.stdout + r.stderr

    ids = [run_example(shared, aiq_env, {"LD_LIBRARY_PATH": lib}),
           run_example(static, aiq_env),
           run_example(str(proj / "b" / "submit_one_cmake"), aiq_env),
           run_example(str(proj / "b" / "submit_one_cmake_static"), aiq_env)]
    assert len(set(ids)) == 4
    assert read_job_ids(aiq_env, 4) == set(ids)
