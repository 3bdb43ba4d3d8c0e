"""Every shell and Python example of the site and the README runs as written (tests/doc_examples.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_examples import EXECUTED, ROOT, Block, blocks, label_problems, page_blocks, pages, run_page

PAGES_WITH_EXAMPLES = [p for p in pages() if any(b.language in EXECUTED for b in page_blocks(p))]


def test_every_fence_says_whether_it_is_run_or_shown() -> None:
    assert label_problems([b for p in pages() for b in page_blocks(p)]) == []


def test_the_site_has_examples_to_run() -> None:
    assert len(PAGES_WITH_EXAMPLES) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    assert list(run_page(page_blocks(page), tmp_path)) == []


# -- the runner itself -------------------------------------------------------------------------------------------

PAGE = """# A page

<!-- example: exit=3 -->
```bash
echo three; exit 3
```

- a list item with an indented example:

    ```python
    print("indented", 6 * 7)
    ```

<!-- example: output -->
```text
indented   42
```

```sh
echo not labelled as run or shown
```
"""


def test_blocks_are_read_with_their_language_line_directive_and_dedented_body() -> None:
    found = blocks(PAGE, "p.md")
    assert [(b.language, b.line) for b in found] == [("bash", 4), ("python", 10), ("text", 15), ("sh", 19)]
    assert found[0].options == {"exit": "3"} and found[2].options == {"output": True}
    assert found[1].body == 'print("indented", 6 * 7)\n'


def test_an_unknown_language_or_a_misplaced_directive_is_named() -> None:
    problems = label_problems(blocks(PAGE, "p.md"))
    assert problems == ["p.md:19: fence language 'sh' is neither run (bash, python) nor shown "
                        "(csv, dockerfile, http, ini, json, ndjson, text, toml, xml, yaml)"]
    misplaced = blocks("<!-- example: output -->\n```text\nx\n```\n<!-- example: exit=1 -->\n```toml\n```\n", "q.md")
    assert label_problems(misplaced) == ["q.md:2: 'output' belongs on a text block right after a run block",
                                         "q.md:6: run options on a block that is not run"]


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match=r"p.md:2: unknown example option 'exitcode'"):
        blocks("<!-- example: exitcode=1 -->\n```bash\ntrue\n```\n", "p.md")


def test_a_page_that_does_what_it_says_passes(tmp_path: Path) -> None:
    assert list(run_page(blocks(PAGE, "p.md")[:3], tmp_path)) == []


def test_a_failing_example_is_named_with_its_exit_status_and_output(tmp_path: Path) -> None:
    page = "```bash\necho before; ls fixtures/batch >/dev/null; exit 4\n```\n```bash\necho never\n```\n"
    [problem] = run_page(blocks(page, "p.md"), tmp_path)
    assert problem.startswith("p.md:1: exited 4, not 0") and "before" in problem


def test_shown_output_must_be_what_was_printed_in_order(tmp_path: Path) -> None:
    page = "```bash\nprintf 'a\\nb\\n'\n```\n<!-- example: output -->\n```text\nb\na\n```\n"
    [problem] = run_page(blocks(page, "p.md"), tmp_path)
    assert "p.md:5: shown line 'a' is not in what the example printed (in order)" in problem


def test_blocks_of_a_page_share_a_folder_and_b12screen_is_on_path(tmp_path: Path) -> None:
    page = ("```bash\nb12screen --version > version.txt\n```\n"
            "```python\nprint(open('version.txt').read().split()[0])\n```\n"
            "<!-- example: output -->\n```text\nb12screen,\n```\n")
    assert list(run_page(blocks(page, "p.md"), tmp_path)) == []


def test_a_background_server_gets_a_free_port_that_later_blocks_use(tmp_path: Path) -> None:
    page = ("<!-- example: port=8765 background -->\n```bash\nexec python -m http.server --bind 127.0.0.1 8765\n```\n"
            "```bash\npython -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8765/\").status)'\n```\n"
            "<!-- example: output -->\n```text\n200\n```\n")
    found = blocks(page, "p.md")
    assert list(run_page(found, tmp_path)) == []
    assert "8765" in found[1].body  # the page is unchanged; only the run used another port


def test_run_by_checks_each_command_is_in_the_script() -> None:
    from doc_examples import run_by_problem
    good = Block("p.md", 1, "bash", "# comment\n.venv/bin/ruff check .\n", {"run-by": ".ci/run"})
    bad = Block("p.md", 9, "bash", "rm -rf build\n", {"run-by": ".ci/run"})
    assert run_by_problem(good) is None
    assert run_by_problem(bad) == "p.md:9: 'rm -rf build' is not in .ci/run"


def _passes_then_fails(page: str, old: str, new: str, folder: Path) -> str:
    """Run ``page`` (it must pass), then the page with ``old`` replaced by ``new``: the one problem it has."""
    assert list(run_page(blocks(page, "p.md"), folder / "as-written")) == []
    [problem] = run_page(blocks(page.replace(old, new), "p.md"), folder / "changed")
    return problem


def test_fhir_server_starts_a_loopback_fhir_server_whose_base_replaces_the_url(tmp_path: Path) -> None:
    page = ("<!-- example: fhir-server=https://fhir.example.org/r4 -->\n```bash\n"
            "python -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1]).read().decode())' "
            "https://fhir.example.org/r4/Patient/bx-met\n```\n"
            "```bash\necho https://fhir.example.org/r4/Flag\n```\n"
            "<!-- example: output -->\n```text\nhttps://fhir.example.org/r4/Flag\n```\n")
    # as written it passes: the shown URL is substituted as the printed one was
    problem = _passes_then_fails(page, "bx-met", "nobody", tmp_path)
    assert problem.startswith("p.md:2: exited 1, not 0") and "HTTP Error 404" in problem


@pytest.mark.slow
def test_bulk_server_serves_the_fixture_export_to_b12screen_export(tmp_path: Path) -> None:
    page = ("<!-- example: bulk-server=https://ehr.example.org/fhir -->\n```bash\n"
            "export B12SCREEN_FHIR_TOKEN=test-access-token\n"
            "b12screen export --fhir-server https://ehr.example.org/fhir --out data/ --no-progress\n"
            "ls data/export\n```\n<!-- example: output -->\n```text\nPatient.000.ndjson\n```\n")
    problem = _passes_then_fails(page, "test-access-token", "wrong", tmp_path)
    assert problem.startswith("p.md:2: exited 2, not 0") and "401" in problem


@pytest.mark.slow
def test_smart_key_makes_the_bulk_server_verify_backend_services_assertions(tmp_path: Path) -> None:
    page = ("```bash\nopenssl genpkey -algorithm RSA -out key.pem 2>/dev/null\n"
            "openssl pkey -in key.pem -pubout -out key.pub.pem\n```\n"
            "<!-- example: bulk-server=https://ehr.example.org/fhir smart-key=key.pub.pem -->\n```bash\n"
            "b12screen export --fhir-server https://ehr.example.org/fhir --client-id b12-client --private-key key.pem"
            " --key-id k1 --out data/ --no-progress\n```\n")
    problem = _passes_then_fails(page, "--client-id b12-client", "--client-id someone-else", tmp_path)
    assert problem.startswith("p.md:6: exited 2, not 0") and "invalid_client" in problem
