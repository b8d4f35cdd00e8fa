"""Exercise generation, the consistency check and parameter handling."""

from __future__ import annotations

import json

from pathlib import Path

import nbformat
import pytest

from course_lib.tooling.checks import course_problems, typed_numbers
from course_lib.tooling.execute import declared_parameters, parse_parameter, run_course
from course_lib.tooling.exercises import (
    MARKDOWN_STUB,
    build_exercises,
    exercise_from_solution,
    graded_cells,
)
from course_lib.tooling.notebook_io import notebook_text, resolve_notebooks, write_notebook


def make_solution() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0")
    params.metadata["tags"] = ["parameters"]
    solution = nbformat.v4.new_code_cell(
        "def double(x):\n    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n    ### END SOLUTION"
    )
    solution.outputs = [nbformat.v4.new_output("stream", text="printed\n")]
    solution.execution_count = 3
    test = nbformat.v4.new_code_cell(
        "assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(-1) == -2\n### END HIDDEN TESTS\nprint('ok')"
    )
    test.metadata["reward_course"] = {"grade_id": "q1", "points": 2}
    answer = nbformat.v4.new_markdown_cell("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION")
    nb.cells = [params, solution, test, answer]
    return nb


def test_solution_regions_become_indented_stubs():
    exercise = exercise_from_solution(make_solution(), "99_demo")
    stub = exercise.cells[1].source
    assert "2 * x" not in stub
    assert '    raise NotImplementedError("replace this line with your solution")' in stub
    assert stub.startswith("def double(x):\n    # YOUR CODE HERE")
    assert exercise.cells[1].outputs == [] and exercise.cells[1].execution_count is None


def test_hidden_tests_are_removed_and_markdown_answers_blanked():
    exercise = exercise_from_solution(make_solution(), "99_demo")
    assert exercise.cells[2].source == "assert double(2) == 4\nprint('ok')"
    assert exercise.cells[2].metadata["reward_course"]["grade_id"] == "q1"
    assert exercise.cells[3].source == f"Why?\n{MARKDOWN_STUB}"
    assert exercise.metadata["reward_course"] == {"assignment": "99_demo"}


def test_generation_is_byte_stable_and_has_no_cell_ids():
    first = notebook_text(exercise_from_solution(make_solution(), "99_demo"))
    second = notebook_text(exercise_from_solution(make_solution(), "99_demo"))
    assert first == second
    assert '"id":' not in first


def test_graded_cells_keep_hidden_tests():
    (cell,) = graded_cells(make_solution())
    assert cell.grade_id == "q1" and cell.points == 2
    assert "double(-1)" in cell.source


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "without a matching"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "opened twice"),
    ],
)
def test_unbalanced_markers_name_the_cell(source, message):
    nb = make_solution()
    nb.cells[1].source = source
    with pytest.raises(ValueError, match=rf"cell 1: .*{message}"):
        exercise_from_solution(nb, "99_demo", "solutions/99_demo.ipynb")


def test_duplicate_grade_ids_and_missing_points_are_errors():
    nb = make_solution()
    nb.cells.append(nbformat.v4.new_code_cell("pass", metadata={"reward_course": {"grade_id": "q1", "points": 1}}))
    with pytest.raises(ValueError, match="used twice"):
        graded_cells(nb)
    nb.cells[-1].metadata["reward_course"] = {"grade_id": "q2"}
    with pytest.raises(ValueError, match="positive 'points'"):
        graded_cells(nb)


@pytest.fixture
def mini_course(tmp_path: Path) -> Path:
    for folder in ("notebooks", "solutions", "exercises", "course_lib"):
        (tmp_path / folder).mkdir()
    solution = make_solution()
    solution.cells[1].outputs, solution.cells[1].execution_count = [], None
    write_notebook(solution, tmp_path / "solutions" / "99_demo.ipynb")
    lesson = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'standard'\nseed = 0\nnoise_rate: float = 0.2")
    params.metadata["tags"] = ["parameters"]
    lesson.cells = [params, nbformat.v4.new_code_cell("print(profile, seed, noise_rate)")]
    write_notebook(lesson, tmp_path / "notebooks" / "99_demo.ipynb")
    build_exercises(tmp_path)
    return tmp_path


def test_check_passes_on_the_real_course(root):
    assert course_problems(root) == []


def test_check_passes_on_a_fresh_build_then_flags_stale_exercises(mini_course):
    assert course_problems(mini_course) == []
    solution = nbformat.read(mini_course / "solutions" / "99_demo.ipynb", 4)
    solution.cells[2].source += "\nassert double(0) == 0"
    write_notebook(solution, mini_course / "solutions" / "99_demo.ipynb")
    assert course_problems(mini_course) == ["exercises/99_demo.ipynb differs from its solution; run 'course build-exercises'"]
    build_exercises(mini_course)
    assert course_problems(mini_course) == []


def test_check_flags_stray_state(mini_course):
    (mini_course / "notebooks" / ".ipynb_checkpoints").mkdir()
    lesson_path = mini_course / "notebooks" / "99_demo.ipynb"
    lesson = nbformat.read(lesson_path, 4)
    lesson.cells[1].outputs = [nbformat.v4.new_output("stream", text="saved to /home/alice/runs/x.pt\n"),
                               nbformat.v4.new_output("stream", name="stderr",
                                                      text="SFT 1/2:  40%|████      | 8/20 [00:01<00:02,  5.6it/s]\r"
                                                           "SFT 1/2: 100%|██████████| 20/20 [00:03<00:00,  5.9it/s]\n")]
    write_notebook(lesson, lesson_path)
    (mini_course / "exercises" / "98_orphan.ipynb").write_text((mini_course / "exercises" / "99_demo.ipynb").read_text())
    problems = "\n".join(course_problems(mini_course))
    assert "checkpoint folder" in problems
    assert "local path ('/home/alice/')" in problems
    assert "99_demo.ipynb, cell 1: 2 progress-bar line(s) stored on stderr" in problems
    assert "98_orphan.ipynb has no solution" in problems
    solution = nbformat.read(mini_course / "solutions" / "99_demo.ipynb", 4)
    solution.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi\n")]
    write_notebook(solution, mini_course / "solutions" / "99_demo.ipynb")
    assert "solutions/99_demo.ipynb, cell 1: has outputs" in "\n".join(course_problems(mini_course))


def test_check_flags_a_cell_id_in_an_nbformat_4_4_notebook(mini_course):
    lesson_path = mini_course / "notebooks" / "99_demo.ipynb"
    raw = json.loads(lesson_path.read_text())
    raw["nbformat_minor"] = 4
    for cell in raw["cells"]:
        cell.pop("id", None)
    lesson_path.write_text(json.dumps(raw, indent=1) + "\n")
    assert "not valid nbformat" not in "\n".join(course_problems(mini_course))
    raw["cells"][0]["id"] = "added-by-an-editor"  # ids are a 4.5 field
    lesson_path.write_text(json.dumps(raw, indent=1) + "\n")
    assert "99_demo.ipynb: not valid nbformat 4.4 (Additional properties are not allowed ('id' was unexpected)" in \
        "\n".join(course_problems(mini_course))


@pytest.mark.parametrize("markdown, found", [
    ("The policy gains 0.21 gold.", ["0.21"]),
    ("It keeps 73% of the pairs, and 12.5 % more.", ["73%", "12.5 %"]),
    ("Settings stay in code or math: `lr=0.001`, $\\beta = 0.1$, $$p = 0.5$$.", []),
    ("A paper's figure, declared: about 73% agree.\n<!-- constants: 73% -->", []),
    ("Declared 73% but not 0.4.\n<!-- constants: 73% -->", ["0.4"]),
    ("arXiv 2505.10597, [a link](https://example.org/v1.2/x), version 3 of 4, the year 2023.", []),
])
def test_typed_numbers_finds_decimals_and_percentages_outside_code_math_and_declared_constants(markdown, found):
    assert typed_numbers(markdown) == found


def test_check_flags_a_measured_number_typed_in_markdown(mini_course):
    lesson_path = mini_course / "notebooks" / "99_demo.ipynb"
    lesson = nbformat.read(lesson_path, 4)
    lesson.cells.append(nbformat.v4.new_markdown_cell("DPO gains 0.21 gold over SFT."))
    write_notebook(lesson, lesson_path)
    assert course_problems(mini_course) == [
        "notebooks/99_demo.ipynb, cell 2: typed number(s) ['0.21'] in markdown; render measured numbers from the run "
        "(display(Markdown(f\"...\"))), or declare a constant of the text with <!-- constants: ... -->"]


def test_parameters_are_parsed_and_declared(mini_course):
    assert parse_parameter("0.4") == 0.4 and parse_parameter("3") == 3
    assert parse_parameter("True") is True and parse_parameter("cuda") == "cuda"
    assert parse_parameter("[1, 2]") == [1, 2]
    assert declared_parameters(mini_course / "notebooks" / "99_demo.ipynb") == {"profile", "seed", "noise_rate"}


def test_unknown_parameter_is_an_error_naming_known_ones(mini_course, tmp_path):
    notebooks = resolve_notebooks(["99"], "notebooks", mini_course)
    with pytest.raises(ValueError, match="noise_rat.*known: noise_rate, profile, seed"):
        run_course(notebooks, tmp_path / "out", "smoke", {"noise_rat": 0.4})


def test_resolve_notebooks_by_number_and_name(mini_course):
    assert [p.name for p in resolve_notebooks(["99"], "notebooks", mini_course)] == ["99_demo.ipynb"]
    assert [p.name for p in resolve_notebooks(["99_demo"], "notebooks", mini_course)] == ["99_demo.ipynb"]
    with pytest.raises(FileNotFoundError, match="available: 99_demo"):
        resolve_notebooks(["07"], "notebooks", mini_course)


def test_the_repository_root_is_found_from_a_subfolder(root, monkeypatch):
    from course_lib.tooling.notebook_io import repo_root

    monkeypatch.chdir(root / "tests")
    assert repo_root() == root


def test_cell_timeout_defaults_per_profile_and_overrides(capsys):
    from course_lib.tooling.cli import build_parser
    from course_lib.tooling.execute import CELL_TIMEOUTS, cell_timeout_for

    assert [cell_timeout_for(profile) for profile in ("smoke", "standard", "full")] == [300, 3600, 21600]
    assert cell_timeout_for("smoke", 2.5) == 2.5 and cell_timeout_for("full", 0) is None  # 0: no limit
    with pytest.raises(ValueError, match="must be >= 0 seconds"):
        cell_timeout_for("smoke", -1)
    parser = build_parser()
    assert parser.parse_args(["run", "01", "--cell-timeout", "90"]).cell_timeout == 90
    assert parser.parse_args(["run", "01"]).cell_timeout is None  # the profile decides
    assert parser.parse_args(["refresh", "--cell-timeout", "0"]).cell_timeout == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--help"])
    run_help = " ".join(capsys.readouterr().out.split())
    assert all(f"{profile} {seconds}" in run_help for profile, seconds in CELL_TIMEOUTS.items())  # help tells the truth


def test_stored_outputs_lose_progress_bars_but_keep_real_warnings():
    from course_lib.tooling.execute import strip_progress_bars

    bars = ("embedding:   2%|▏         | 1/47 [00:01<01:02,  1.36s/it]\r"
            "embedding: 100%|██████████| 47/47 [01:00<00:00,  1.20s/it]\n")
    outputs = [
        {"output_type": "stream", "name": "stderr", "text": bars},
        {"output_type": "stream", "name": "stderr", "text": bars + "UserWarning: something real\n"},
        {"output_type": "stream", "name": "stdout", "text": "accuracy 50%|x| [kept: stdout is never touched]\n"},
    ]
    kept = strip_progress_bars(outputs)
    assert [o["text"] for o in kept] == ["UserWarning: something real\n",
                                         "accuracy 50%|x| [kept: stdout is never touched]\n"]
