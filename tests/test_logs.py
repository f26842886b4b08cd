"""Logging: INFO is for operators, library chatter only with -v (as DEBUG), log files rotate by size."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.logs import LIBRARY_LOGGERS, LogOptions, configure_logging
from tests.support import write_site


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)


def emit_sample() -> None:
    # The line that made a central's log grow by about 70 MB a day.
    logging.getLogger("asyncua.common.subscription").info("Publish callback called with result: %s", "x")
    logging.getLogger("asyncua.client.ua_client").warning("library warning")
    logging.getLogger("apscheduler.executors.default").info("Running job reoptimize")
    logging.getLogger("central.service.jobs").info("plan p-1 pushed: 3/3 accepted")


@pytest.mark.usefixtures("restore_logging")
def test_library_chatter_is_dropped_without_verbose(tmp_path: Path) -> None:
    configure_logging(LogOptions(file=tmp_path / "ems.log"))
    emit_sample()
    lines = (tmp_path / "ems.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "WARNING asyncua.client.ua_client: library warning",
        "INFO central.service.jobs: plan p-1 pushed: 3/3 accepted",
    ]


@pytest.mark.usefixtures("restore_logging")
def test_with_verbose_library_info_appears_as_debug(tmp_path: Path) -> None:
    configure_logging(LogOptions(verbose=True, file=tmp_path / "ems.log"))
    emit_sample()
    text = (tmp_path / "ems.log").read_text()
    assert "DEBUG asyncua.common.subscription: Publish callback called" in text
    assert "DEBUG apscheduler.executors.default: Running job reoptimize" in text
    assert "INFO asyncua" not in text and "INFO apscheduler" not in text
    assert "WARNING asyncua.client.ua_client: library warning" in text
    assert "INFO central.service.jobs: plan p-1" in text


@pytest.mark.usefixtures("restore_logging")
def test_the_log_file_rotates_by_size_and_keeps_the_backups_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "central.log"  # the directory is created
    configure_logging(LogOptions(file=path, max_mb=0.002, backups=2))  # 2097 bytes
    for number in range(400):
        logging.getLogger("central").info("line %04d %s", number, "x" * 40)
    assert sorted(p.name for p in path.parent.iterdir()) == ["central.log", "central.log.1", "central.log.2"]
    for file in path.parent.iterdir():
        assert file.stat().st_size <= 2097 + 200
    assert "line 0399" in path.read_text()


def test_bad_log_options_are_one_line_errors(tmp_path: Path) -> None:
    for args, expected in (
        (["--log-max-mb", "0"], "error: --log-max-mb: must be > 0, got 0"),
        (["--log-backups", "0"], "error: --log-backups: must be >= 1, got 0"),
        (["--log-file", str(tmp_path)], f"error: --log-file: cannot open {tmp_path}: Is a directory"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ems", *args, "validate", "examples/site.toml"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parent.parent,
        )
        assert result.returncode == 2, result
        assert result.stderr.strip() == expected


def ems(*args: str | Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ems", *map(str, args)], capture_output=True, text=True, timeout=timeout_s
    )


def test_a_long_running_command_logs_to_the_rotating_file(tmp_path: Path) -> None:
    site_path, _ = write_site(tmp_path, cabinets=1)
    log = tmp_path / "sim.log"
    argv = [
        sys.executable,
        "-m",
        "ems",
        "--log-file",
        str(log),
        "--log-max-mb",
        "1",
        "sim",
        "--site",
        str(site_path),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while ems("sim", "--site", site_path, "--status").returncode != 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "ems sim did not answer on its control address"
            time.sleep(0.2)
        assert ems("sim", "--site", site_path, "--fault", "cab-1:over_temperature").returncode == 0
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert " INFO simulators.control: control: set cab-1 over_temperature" in log.read_text()
    assert " INFO " not in err  # the log went to the file, not to stderr
