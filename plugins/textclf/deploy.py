"""The ``deploy`` command: upload the DAG, SQL and plugin to a Cloud Composer environment.

Runs ``gcloud``, which must be installed and logged in. The steps:

1. read the environment's DAG folder (``config.dagGcsPrefix``, ``gs://BUCKET/dags``);
2. sync ``dags/`` to it, ``sql/`` to ``dags/sql`` (where the DAG looks for templates) and
   ``plugins/textclf`` to ``plugins/textclf`` in the same bucket;
3. optionally upload a ``TEXTCLF_CONFIG`` file to the bucket's ``data/`` folder and point the
   environment variable at it;
4. install the PyPI packages that Composer lacks from ``requirements-composer.txt``.

``--dry-run`` prints the commands as a bash script instead of running them.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
from pathlib import Path

import textclf

log = logging.getLogger(__name__)

DAG_PREFIX_VARIABLE = "DAG_GCS_PREFIX"
# Composer mounts the bucket's data/ folder at this path on every worker.
COMPOSER_DATA_MOUNT = "/home/airflow/gcs/data"
CONFIG_OBJECT = "data/textclf/config.json"
REQUIREMENTS_FILE = "requirements-composer.txt"
# gcloud storage rsync takes regular expressions over the relative path; compiled Python files
# would only be rebuilt on the workers.
EXCLUDE_PATTERN = r".*__pycache__.*|.*\.pyc$"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of the ``deploy`` command."""
    parser.add_argument("--environment", required=True, help="name of the Cloud Composer environment")
    parser.add_argument("--location", required=True, help="region of the environment, e.g. us-central1")
    parser.add_argument("--project", help="project of the environment (default: gcloud's configured project)")
    parser.add_argument("--config", metavar="FILE.json", help="pipeline configuration to upload and set as TEXTCLF_CONFIG")
    parser.add_argument(
        "--source-dir",
        default=str(default_source_dir()),
        help="checkout with dags/, sql/, plugins/textclf and requirements-composer.txt (default: this checkout)",
    )
    parser.add_argument(
        "--skip-packages", action="store_true", help="skip the PyPI package update, which takes many minutes"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, one per line, without running them")


def default_source_dir() -> Path:
    """Return the checkout that contains the imported ``textclf`` package (``<root>/plugins/textclf``)."""
    return Path(textclf.__file__).resolve().parents[2]


def describe_command(args: argparse.Namespace) -> list[str]:
    """Return the gcloud command that prints the environment's DAG folder URI."""
    return [
        "gcloud",
        "composer",
        "environments",
        "describe",
        args.environment,
        *_location_flags(args),
        "--format=value(config.dagGcsPrefix)",
    ]


def upload_commands(args: argparse.Namespace, dag_prefix: str) -> list[list[str]]:
    """Return the commands that upload the code and configuration and install the packages.

    :param args: the parsed command-line arguments.
    :param dag_prefix: the environment's DAG folder, ``gs://BUCKET/dags``, or a shell variable.
    """
    source = Path(args.source_dir)
    bucket_root = _bucket_root(dag_prefix)
    exclude = f"--exclude={EXCLUDE_PATTERN}"
    commands = [
        # No deletion in the DAG folder: other DAGs may live there.
        ["gcloud", "storage", "rsync", "--recursive", exclude, str(source / "dags"), dag_prefix],
        [
            "gcloud", "storage", "rsync", "--recursive", "--delete-unmatched-destination-objects", exclude,
            str(source / "sql"), f"{dag_prefix}/sql",
        ],
        [
            "gcloud", "storage", "rsync", "--recursive", "--delete-unmatched-destination-objects", exclude,
            str(source / "plugins" / "textclf"), f"{bucket_root}/plugins/textclf",
        ],
    ]
    if args.config:
        commands.append(["gcloud", "storage", "cp", str(args.config), f"{bucket_root}/{CONFIG_OBJECT}"])
        commands.append(
            [
                "gcloud", "composer", "environments", "update", args.environment, *_location_flags(args),
                f"--update-env-variables=TEXTCLF_CONFIG={COMPOSER_DATA_MOUNT}/textclf/config.json",
            ]
        )
    if not args.skip_packages:
        commands.append(
            [
                "gcloud", "composer", "environments", "update", args.environment, *_location_flags(args),
                f"--update-pypi-packages-from-file={source / REQUIREMENTS_FILE}",
            ]
        )
    return commands


def run_command(args: argparse.Namespace) -> int:
    """Run ``deploy`` and return the exit status."""
    source = Path(args.source_dir)
    required = [source / "dags", source / "sql", source / "plugins" / "textclf"]
    if not args.skip_packages:
        required.append(source / REQUIREMENTS_FILE)
    if args.config:
        required.append(Path(args.config))
    missing = [str(path) for path in required if not path.exists()]
    if missing:
        log.error("Cannot deploy: %s not found. Pass the checkout as --source-dir.", ", ".join(missing))
        return 2

    if args.dry_run:
        print(f"{DAG_PREFIX_VARIABLE}=$({render_command(describe_command(args))})")
        for command in upload_commands(args, f"${{{DAG_PREFIX_VARIABLE}}}"):
            print(render_command(command))
        return 0

    log.info("Reading the DAG folder of Composer environment %s in %s", args.environment, args.location)
    described = subprocess.run(describe_command(args), check=True, capture_output=True, text=True)
    dag_prefix = described.stdout.strip()
    if not (dag_prefix.startswith("gs://") and dag_prefix.endswith("/dags")):
        log.error(
            "Environment %s returned DAG folder %r, expected gs://BUCKET/dags. Check the environment name and location.",
            args.environment,
            dag_prefix,
        )
        return 1
    log.info("Environment %s has DAG folder %s", args.environment, dag_prefix)

    for command in upload_commands(args, dag_prefix):
        log.info("Running: %s", render_command(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            continue
        # NOTE: gcloud fails an update that changes nothing; the check is on its message text.
        if "update" in command and "no change" in result.stderr.lower():
            log.info("Environment %s already has this setting; nothing to update", args.environment)
            continue
        log.error("Command failed with exit code %s: %s\n%s", result.returncode, render_command(command), result.stderr)
        return result.returncode
    log.info("Deployed to environment %s: the DAG appears in the Airflow UI within a few minutes", args.environment)
    return 0


def render_command(command: list[str]) -> str:
    """Return ``command`` as one bash line; arguments with the DAG folder variable stay expandable."""
    return " ".join(_quote(argument) for argument in command)


def _quote(argument: str) -> str:
    if f"${{{DAG_PREFIX_VARIABLE}" in argument:
        return f'"{argument}"'
    return shlex.quote(argument)


def _bucket_root(dag_prefix: str) -> str:
    if dag_prefix == f"${{{DAG_PREFIX_VARIABLE}}}":
        return f"${{{DAG_PREFIX_VARIABLE}%/dags}}"
    return dag_prefix.removesuffix("/dags")


def _location_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--location", args.location]
    if args.project:
        flags += ["--project", args.project]
    return flags
