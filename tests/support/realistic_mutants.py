"""Bugs a developer could plausibly write, one at a time: each must make its tests fail.

mutmut's operators change an operator or a constant; the bugs that slip through review are
more often a deleted statement, an early return, a swapped field or a flipped comparison
(issue 31). This table holds such bugs, written by hand where a promise lives (the README's,
the schema's, ``--help``'s: docs/promises.md names them), each with the tests that must catch
it. The runner applies ONE bug to a copy of the tree (``cosyvoice_otel/``, ``tests/``,
``examples/``; the venv linked), runs the named tests there, and counts the bug caught when
they fail.

    .venv/bin/python -m tests.support.realistic_mutants            # every row
    .venv/bin/python -m tests.support.realistic_mutants gap4 seams3  # some rows

Prints one line per bug and ``N caught, M missed``; exits 1 when any is missed or a row no
longer applies (its ``old`` text is gone: the row must follow the code).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]


class Bug(NamedTuple):
    key: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


U = "tests/unit/"
P = U + "test_promises.py::"
T = U + "test_trust_seams.py::"

BUGS: tuple[Bug, ...] = (
    # -- issue 31's nine gaps
    Bug("gap1", "cosyvoice_otel/instrumentation/api.py",
        "            if not trace.get_current_span().get_span_context().is_valid:\n"
        "                return func(*args, **kwargs)\n", "",
        (P + "test_gap1_a_decorated_function_outside_a_request_does_nothing",),
        "the decorator's outside-a-request check deleted"),
    Bug("gap2", "cosyvoice_otel/instrumentation/api.py",
        "            if active is None or not _named(name):",
        "            if active is None:",
        (P + "test_gap2_a_badly_named_decorated_stage_gets_no_span_and_one_warning",),
        "the decorator's name check deleted"),
    Bug("gap3", "cosyvoice_otel/instrumentation/audio_figures.py",
        "        elif position is not None:\n            value.seek(position)\n",
        "        elif position is not None:\n            pass\n",
        (P + "test_gap3_reading_a_prompt_that_is_not_a_wav_leaves_the_file_where_it_was",),
        "the file object's position not restored"),
    Bug("gap4", "cosyvoice_otel/sdk/zipkin_http.py",
        "gone = answers and answers[-1].outcome in (AWAY, UNCERTAIN)",
        "gone = answers and answers[-1].outcome in (AWAY,)",
        (P + "test_gap4_when_a_half_times_out_the_other_half_waits_untried",),
        "a timed-out half does not stop the other half"),
    Bug("gap5", "cosyvoice_otel/sdk/spool.py",
        "        os.fchmod(fd, 0o700)  # ours alone", "        pass  # ours alone",
        (P + "test_gap5_an_existing_open_spool_folder_is_closed_to_others",),
        "an existing spool folder keeps its mode"),
    Bug("gap6", "cosyvoice_otel/sdk/keep_errors.py",
        "            entry.open += 1\n            entry.closed_at = None\n",
        "            entry.open += 1\n",
        (P + "test_gap6_a_span_started_after_the_root_ended_is_not_swept_while_open",),
        "a span starting in a closed trace does not reopen it"),
    Bug("gap7", "cosyvoice_otel/tools/report.py",
        "    if not ordered or len(set(ordered)) <= buckets:",
        "    if not ordered or len(set(ordered)) < buckets:",
        (P + "test_gap7_five_distinct_values_are_five_groups",),
        "five values bucketed"),
    Bug("gap8", "cosyvoice_otel/tools/report.py",
        'delta, p = self.delta("p50"), self.p_value',
        'delta, p = self.delta("p95"), self.p_value',
        (P + "test_gap8_the_verdict_follows_the_medians_not_the_tails",),
        "--compare judges by p95"),
    Bug("gap9", "cosyvoice_otel/tools/verify.py",
        "    leaked = sent.canary in stored", "    leaked = False",
        (P + "test_gap9_verify_fails_when_the_requests_text_is_in_zipkin",),
        "verify's leak check deleted"),
    # -- issue 30's seams
    Bug("seams1", "cosyvoice_otel/sdk/redaction.py",
        "        if isinstance(value, (bytes, bytearray, memoryview)):\n"
        "            return mask(bytes(value).decode(\"utf-8\", \"replace\"), pattern)\n",
        "        if isinstance(value, (bytes, bytearray, memoryview)):\n"
        "            return bytes(value).decode(\"utf-8\", \"replace\")\n",
        (T + "test_1_any_shape_of_the_text_is_masked_on_every_exporter",),
        "bytes decoded but not masked"),
    Bug("seams1b", "cosyvoice_otel/sdk/redaction.py",
        "        if isinstance(value, Mapping):\n            return mask(_json(value), pattern)",
        "        if isinstance(value, Mapping):\n            return _json(value)",
        (T + "test_1_any_shape_of_the_text_is_masked_on_every_exporter",),
        "a mapping rendered but not masked"),
    Bug("seams2", "cosyvoice_otel/sdk/zipkin_json.py",
        "sort_keys=True, default=_placeholder)}", "sort_keys=True)}",
        (T + "test_2_the_encoder_alone_survives_bytes_and_objects_in_events",),
        "the encoder's guard for values JSON cannot encode removed"),
    Bug("seams3", "cosyvoice_otel/instrumentation/routes.py",
        "                    masking.remember(span_context.trace_id, (values,))\n",
        "                    pass\n",
        (T + "test_3_fastapis_parsed_values_are_registered_before_the_endpoint_runs",
         T + "test_3_fastapi_end_to_end_in_process"),
        "FastAPI's values not registered"),
    Bug("seams3b", "cosyvoice_otel/instrumentation/gradio_bridge.py",
        "        masking.remember(trace_id, [_input(value) for value in values[:64]])",
        "        pass",
        (T + "test_3_a_gradio_events_inputs_are_registered_before_its_handler_runs",),
        "a Gradio event's inputs not registered"),
    Bug("seams4", "cosyvoice_otel/sdk/zipkin_http.py",
        '            self.drop(span_count(data), "disk_full", "the spool\'s disk is full")',
        "            pass",
        (T + "test_4_a_bisected_part_the_full_disk_refuses_is_counted_disk_full",),
        "parts lost to a full disk not counted"),
    Bug("seams5", "cosyvoice_otel/sdk/prometheus.py",
        '        values = [labels.get(key, "") for key in names]',
        "        values = list(labels.values())",
        (T + "test_5_each_series_has_its_own_labels_not_the_first_points",),
        "label values zipped by position"),
    Bug("seams6", "cosyvoice_otel/sdk/redaction.py",
        "            if key in UNMASKED_KEYS or (key == ERROR_TYPE and known_reason(value)):",
        "            if key in UNMASKED_KEYS or key == ERROR_TYPE:",
        (T + "test_6_an_undeclared_reason_is_one_metric_label_and_masked_on_spans",),
        "error.type never masked"),
    Bug("seams7", "cosyvoice_otel/instrumentation/audio_figures.py",
        "            if available is not None and (frames == 0 or frames > available):",
        "            if available is not None and frames == 0:",
        (T + "test_7_a_wav_from_a_pipe_has_its_real_duration_and_no_false_limit",),
        "the header's frame count trusted"),
    Bug("seams8", "cosyvoice_otel/sdk/spool.py",
        "os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)", "os.O_RDONLY | os.O_DIRECTORY)",
        (T + "test_8_a_planted_symlink_for_the_spool_folder_is_refused_not_followed",),
        "the spool folder followed as a link"),
    Bug("seams12", "cosyvoice_otel/sdk/spool.py",
        "                        if entry.is_file(follow_symlinks=False):",
        "                        if True:",
        (T + "test_12_a_fifo_named_like_a_batch_never_blocks_replay",
         T + "test_9_a_dangling_link_or_a_vanished_entry_leaves_the_spool_usable"),
        "every entry named *.json taken for a batch"),
    Bug("seams10", "cosyvoice_otel/sdk/zipkin_http.py",
        "    return isinstance(cause, urllib3.exceptions.ProtocolError)", "    return False",
        (T + "test_10_a_batch_stored_then_cut_off_is_sent_at_most_twice",),
        "a connection closed after the batch went out taken for 'away'"),
    Bug("seams13", "cosyvoice_otel/sdk/zipkin_http.py",
        'f"Zipkin at {shown(self.endpoint)} is not taking spans', 'f"Zipkin at {self.endpoint} '
        'is not taking spans', (T + "test_13_the_away_line_hides_the_password",),
        "the endpoint printed with its credentials"),
    Bug("seams15", "cosyvoice_otel/instrumentation/api.py",
        "        chosen = next((e for e in reversed(entries) if e[0] is current), None) or next(",
        "        chosen = None or next(",
        (T + "test_15_one_stage_object_in_two_interleaved_tasks_closes_each_its_own",),
        "an exit closes this thread's latest entry, not its own"),
    Bug("seams20", "cosyvoice_otel/instrumentation/stage_span.py",
        "            reason = self.reason or getattr(exc, REASON_ATTR, None)",
        "            reason = getattr(exc, REASON_ATTR, None)",
        (T + "test_20_a_declared_reason_then_a_raise_keeps_the_reason",),
        "the declared reason overwritten by the exception's type"),
    # -- issue 36's traps
    Bug("readme1", "cosyvoice_otel/tools/nginx.py",
        '        sessions = _location("/gradio_api/", "cosyvoice_sessions") + "\\n"',
        '        sessions = ""',
        ("tests/e2e/test_nginx.py::test_replicas_become_one_upstream_block",),
        "Gradio's routes balanced round robin like the rest"),
    Bug("readme2", "cosyvoice_otel/sdk/zipkin_http.py",
        "                claim = self.spool.claim(path)\n", "                claim = 0\n",
        (T + "test_two_replicas_sharing_a_spool_never_send_one_batch_twice",),
        "replay sends a batch another replica holds"),
    Bug("readme3", "cosyvoice_otel/launcher/cli.py",
        "    if unknown:\n", "    if False:\n",
        (U + "test_report_traps.py::test_an_alert_on_a_misspelt_stage_is_a_one_line_error",),
        "an alert on a misspelt stage passes silently"),
    Bug("readme4", "cosyvoice_otel/tools/report.py",
        "                figures[key] = recorded[short]", "                pass",
        (U + "test_report_traps.py::test_errors_shows_the_figures_recorded_with_the_failure",),
        "--errors ignores the figures recorded with the failure"),
    Bug("readme7", "cosyvoice_otel/sdk/prometheus.py",
        "                        exemplar = kept.get(key)", "                        pass",
        (U + "test_report_traps.py::"
         "test_an_exemplar_stays_on_its_bucket_across_scrapes_until_a_newer_one",),
        "an exemplar gone from the second scrape"),
    Bug("readme8", "cosyvoice_otel/tools/doctor.py",
        "        if second > previous:", "        if False:",
        (U + "test_report_traps.py::test_the_clock_offset_is_placed_by_the_seconds_crossing",),
        "the clock offset read from one Date header"),
)


def copy_tree(prefix: str) -> Path:
    """A copy of what the tests read (``cosyvoice_otel/``, ``tests/``, ``examples/``, the
    top files), the venvs and the docs linked, to mutate one file of it (the e2e tests run
    there too: the Gradio 5 and real-engine venvs are the project's own)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    for part in ("cosyvoice_otel", "tests", "examples"):
        shutil.copytree(ROOT / part, work / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for part in ("pyproject.toml", "README.md", "launch.sh"):
        shutil.copy2(ROOT / part, work / part)
    for link in (".venv", ".venv-gradio5", ".venv-cosyvoice", "docs"):
        if (ROOT / link).exists():
            os.symlink(ROOT / link, work / link)
    return work


def _tree(bug: Bug) -> Path:
    """A copy of the tree with ``bug`` applied."""
    work = copy_tree(f"mutant-{bug.key}-")
    target = work / bug.path
    source = target.read_text(encoding="utf-8")
    if source.count(bug.old) != 1:
        shutil.rmtree(work, ignore_errors=True)
        raise LookupError(f"{bug.key}: its text is in {bug.path} {source.count(bug.old)} "
                          "times (the row must follow the code)")
    target.write_text(source.replace(bug.old, bug.new), encoding="utf-8")
    return work


def caught(bug: Bug) -> bool:
    work = _tree(bug)
    try:
        env = {**os.environ, "PYTHONPATH": str(work)}
        run = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-x", "-n", "0",
             "-p", "no:randomly", "-p", "no:cacheprovider", *bug.tests],
            cwd=work, env=env, capture_output=True, text=True, timeout=600)
        return run.returncode == 1  # tests ran and failed (not: collection errors, 2-5)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(keys: list[str]) -> int:
    chosen = [b for b in BUGS if not keys or b.key in keys]
    hits = misses = 0
    for bug in chosen:
        try:
            ok = caught(bug)
        except LookupError as exc:
            print(f"STALE  {exc}")
            misses += 1
            continue
        hits += ok
        misses += not ok
        print(f"{'caught' if ok else 'MISSED'} {bug.key}: {bug.why}", flush=True)
    print(f"{hits} caught, {misses} missed")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
