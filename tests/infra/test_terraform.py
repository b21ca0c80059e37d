"""infra/terraform: formatted, valid, and its offline `terraform test` suites pass.

Everything runs without AWS credentials or network access: the hashicorp/aws provider comes from the
local filesystem mirror at /opt/tf-plugins (CLI config written here, never ~/.terraformrc), and the
`terraform test` files mock the provider. Terraform only ever runs on a temporary copy of
infra/terraform, so no `.terraform/`, lock file or state lands in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TF_ROOT = REPO / "infra" / "terraform"
MODULE = Path("modules") / "gpu-cluster"
EXAMPLE = Path("examples") / "eks"

MIRROR = Path("/opt/tf-plugins")
PROVIDER = "registry.terraform.io/hashicorp/aws"
PROVIDER_VERSION = "5.100.0"

# Generous per-command limit; the whole module takes about a minute on 2 cores.
COMMAND_TIMEOUT_S = 300


@dataclass(frozen=True)
class Terraform:
    binary: str
    env: dict[str, str]
    workdir: Path  # temporary copy of infra/terraform

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    def ok(self, *args: str, cwd: Path) -> str:
        proc = self.run(*args, cwd=cwd)
        assert proc.returncode == 0, (
            f"`terraform {' '.join(args)}` in {cwd} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout


def _cli_config(plugin_cache: Path) -> str:
    return f"""\
plugin_cache_dir = "{plugin_cache}"

provider_installation {{
  filesystem_mirror {{
    path    = "{MIRROR}"
    include = ["{PROVIDER}"]
  }}
  direct {{
    exclude = ["{PROVIDER}"]
  }}
}}
"""


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terraform]:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.fail(
            "`terraform` is not on PATH. Install Terraform >= 1.11 "
            "(https://developer.hashicorp.com/terraform/install) to run the infra/terraform tests.",
            pytrace=False,
        )
    provider_dir = MIRROR / PROVIDER / PROVIDER_VERSION
    if not any(provider_dir.glob("*/terraform-provider-aws_*")):
        pytest.fail(
            f"the Terraform provider mirror is missing: no {PROVIDER} {PROVIDER_VERSION} under {provider_dir}. "
            f"Create it with `terraform providers mirror {MIRROR}` from infra/terraform/examples/eks "
            "(needs network access once).",
            pytrace=False,
        )

    base = tmp_path_factory.mktemp("terraform")
    cli_config = base / "terraform.rc"
    cli_config.write_text(_cli_config(base / "plugin-cache"), encoding="utf-8")
    (base / "plugin-cache").mkdir()
    workdir = base / "infra-terraform"
    shutil.copytree(
        TF_ROOT,
        workdir,
        ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*", "*.tfvars*"),
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "CHECKPOINT_"))}
    env.update(
        # The environment points TF_CLI_CONFIG_FILE at a file that does not exist: always override it.
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
    )
    yield Terraform(binary=binary, env=env, workdir=workdir)
    # The provider binary is ~700 MB per copy; don't leave it in pytest's kept temp dirs.
    shutil.rmtree(base, ignore_errors=True)


_initialized: set[Path] = set()


def _init(tf: Terraform, root: Path) -> Path:
    path = tf.workdir / root
    if path not in _initialized:
        tf.ok("init", "-backend=false", "-no-color", cwd=path)
        _initialized.add(path)
    return path


def _run_names(test_dir: Path) -> list[str]:
    return [
        name
        for f in sorted(test_dir.glob("*.tftest.hcl"))
        for name in re.findall(r'^run "([^"]+)"', f.read_text(encoding="utf-8"), flags=re.M)
    ]


def test_fmt(terraform: Terraform) -> None:
    proc = terraform.run("fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_ROOT), cwd=REPO)
    assert proc.returncode == 0, f"run `terraform fmt -recursive infra/terraform`:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("root", [MODULE, EXAMPLE], ids=str)
def test_validate(terraform: Terraform, root: Path) -> None:
    path = _init(terraform, root)
    assert "The configuration is valid" in terraform.ok("validate", "-no-color", cwd=path)


@pytest.mark.parametrize("root", [MODULE, EXAMPLE], ids=str)
def test_terraform_test_suites_pass(terraform: Terraform, root: Path) -> None:
    path = _init(terraform, root)
    out = terraform.ok("test", "-no-color", cwd=path)
    names = _run_names(path / "tests")
    assert names, f"no run blocks found under {root}/tests"
    for name in names:
        assert f'run "{name}"... pass' in out, f'run "{name}" did not pass:\n{out}'
    assert f"Success! {len(names)} passed, 0 failed." in out, out


# Bad inputs and the message a user must see. `expect_failures` in validation.tftest.hcl proves the
# right variable rejects them; these check the wording, which `expect_failures` cannot.
BAD_INPUTS: dict[str, tuple[dict[str, str], str]] = {
    "gpu_max_below_min": (
        {"gpu_node_groups": '{ g5 = { instance_types = ["g5.xlarge"], min_size = 2, max_size = 1 } }'},
        "max_size must be >= min_size",
    ),
    "gpu_negative_min": (
        {"gpu_node_groups": '{ g5 = { instance_types = ["g5.xlarge"], min_size = -1 } }'},
        "min_size must be >= 0",
    ),
    "gpu_cpu_family": (
        {"gpu_node_groups": '{ g5 = { instance_types = ["c5.xlarge"] } }'},
        "instance_types must be NVIDIA GPU instances",
    ),
    "gpu_ami": (
        {"gpu_node_groups": '{ g5 = { instance_types = ["g5.xlarge"], ami_type = "AL2023_ARM_64_STANDARD" } }'},
        "ami_type must be an NVIDIA AMI type",
    ),
    "vpc_cidr": ({"vpc_cidr": '"10.0.0.300/16"'}, "vpc_cidr must be an IPv4 CIDR block"),
    "one_az": ({"availability_zones": '["us-east-1a"]'}, "availability_zones must list 2 to 4 AZs"),
    "cluster_name": ({"cluster_name": '"-bad"'}, "cluster_name must be 3-32 characters"),
    "model_server_namespace": ({"model_server_namespaces": '["Team_A"]'},
                               "model_server_namespaces must be Kubernetes namespace names"),
}


@pytest.fixture(scope="session")
def validation_diagnostics(terraform: Terraform) -> dict[str, str]:
    """Run one plan per bad input (no expect_failures) and collect each run's error text."""
    path = _init(terraform, MODULE)
    test_dir = path / "validation-messages"
    test_dir.mkdir()
    for name, (bad, _) in BAD_INPUTS.items():
        assignments = "\n    ".join(f"{k} = {v}" for k, v in ({"cluster_name": '"mlplane-test"'} | bad).items())
        (test_dir / f"{name}.tftest.hcl").write_text(
            f"""mock_provider "aws" {{
  source = "./tests/mocks"
}}

run "{name}" {{
  command = plan
  variables {{
    {assignments}
  }}
}}
""",
            encoding="utf-8",
        )
    proc = terraform.run("test", "-json", "-test-directory=validation-messages", cwd=path)
    assert proc.returncode != 0, f"bad inputs were accepted:\n{proc.stdout}"
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        diagnostic = event.get("diagnostic")
        if event.get("type") == "diagnostic" and diagnostic:
            run = event.get("@testrun") or Path(event.get("@testfile", "")).name.removesuffix(".tftest.hcl")
            found[run] = found.get(run, "") + f"{diagnostic.get('summary')}: {diagnostic.get('detail')}\n"
    assert set(found) <= set(BAD_INPUTS), f"errors outside the bad-input runs (broken test files?):\n{found}"
    return found


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_validation_message(validation_diagnostics: dict[str, str], case: str) -> None:
    text = validation_diagnostics.get(case, "")
    assert "Invalid value for variable" in text, f"{case}: expected a variable validation error, got:\n{text}"
    assert BAD_INPUTS[case][1] in text, f"{case}: message should contain {BAD_INPUTS[case][1]!r}, got:\n{text}"


def test_nothing_written_to_the_repo() -> None:
    leftovers = [p for p in TF_ROOT.rglob("*") if p.name in {".terraform", ".terraform.lock.hcl", "terraform.tfstate"}]
    assert not leftovers, f"terraform working files in the repository: {leftovers}"
