"""The schema is one source of truth: the docs, the stage map and the checker agree with it."""

import json
import subprocess

from cosyvoice_otel import schema
from cosyvoice_otel.instrumentation.stage_map import PROFILES, all_spans

from ..support.helpers import BIN, ROOT


def test_docs_are_generated_from_the_schema() -> None:
    assert (ROOT / "docs" / "tracing-schema.md").read_text(encoding="utf-8") == \
        schema.to_markdown(), "run: cosyvoice-traced schema > docs/tracing-schema.md"


def test_every_span_the_stage_map_makes_is_in_the_schema() -> None:
    known = schema.span_names() | {f"tts_frontend.{m}" for m in schema.MODES}
    made = all_spans(PROFILES["cosyvoice"])
    assert made <= known, made - known
    # and every stage the schema names is made by some row (or by the Gradio bridge)
    named = {n for n in schema.span_names() if "<" not in n} - {schema.GRADIO_EVENT}
    assert named <= made


def test_schema_command_json_round_trips() -> None:
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "schema", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert data["schema_version"] == schema.SCHEMA_VERSION
    assert {s["name"] for s in data["spans"]} == schema.span_names()


def test_readme_documents_every_option() -> None:
    from cosyvoice_otel.settings import OPTIONS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for option in OPTIONS:
        assert option.flag.split("/")[0].split()[0] in readme, option.flag
        assert option.envvar in readme, option.envvar


def test_every_name_has_a_status() -> None:
    """stable / development / draft / ours, for every attribute and metric: a gen_ai name is
    never ours, ours are never gen_ai, and each status the table names is used somewhere."""
    doc = schema.to_dict()
    names = [a for d in doc["spans"] for a in d["attributes"]]
    names += doc["common_attributes"]
    names += [a for e in doc["events"] for a in e["attributes"]]
    names += doc["metrics"]
    for item in names:
        assert item["status"] in schema.STATUSES, item
        assert (item["status"] == "ours") is (not item["name"].startswith(("gen_ai.", "error."))), \
            item
    seen = {item["name"] for item in names}
    assert set(schema.CONVENTION_STATUS) <= seen  # no status for a name the schema does not list
    assert {schema.status_of(schema.GENAI_VOICE),
            schema.status_of(schema.GENAI_INPUT_LANGUAGE)} == {"draft"}
    assert schema.status_of(schema.ERROR_TYPE) == "stable"
    assert "| status |" in schema.to_markdown()
