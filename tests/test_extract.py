"""Code and JSON extraction from answers written the way local models write them."""

import pytest
from hpcagents.llm.extract import extract_code, extract_json

FN = "kernel_dgemm"
CODE = "#include <stddef.h>\nvoid kernel_dgemm(int m) {\n    (void)m;\n}\n"


def test_fenced_c_block_inside_prose_is_extracted():
    text = f"Here is my version.\n\n```c\n{CODE}```\nIt should be faster."
    ex = extract_code(text, FN)
    assert ex.status == "ok" and ex.method == "fenced"
    assert ex.code.strip() == CODE.strip()


def test_last_block_defining_the_function_wins_over_snippets():
    text = f"The idea:\n```c\nfor (i = 0; i < n; i++) x += y;\n```\nFull file:\n```cpp\n{CODE}```"
    assert extract_code(text, FN).code.strip() == CODE.strip()


def test_think_block_never_leaks_into_code():
    text = f"<think>maybe ```c\nvoid kernel_dgemm(int m) {{ BAD }}\n```</think>\n```c\n{CODE}```"
    ex = extract_code(text, FN)
    assert "BAD" not in ex.code and ex.status == "ok"


def test_unfenced_answer_starting_at_include_is_accepted():
    ex = extract_code(f"Sure:\n{CODE}", FN)
    assert ex.status == "ok" and ex.method == "unfenced" and ex.code.startswith("#include")


def test_prose_only_answer_is_no_code_not_an_exception():
    ex = extract_code("I would block the loops for the L2 cache.", FN)
    assert ex.status == "no_code" and ex.code is None and "no C code" in ex.reason


def test_code_without_the_kernel_function_is_no_code():
    ex = extract_code("```c\nint main(void) { return 0; }\n```", FN)
    assert ex.status == "no_code" and FN in ex.reason


def test_unclosed_fence_with_unbalanced_braces_is_truncated():
    text = "```c\nvoid kernel_dgemm(int m) {\n  for (;;) {\n"
    ex = extract_code(text, FN)
    assert ex.status == "truncated" and "unbalanced" in ex.reason


def test_length_finish_reason_marks_truncation():
    ex = extract_code(f"```c\n{CODE}```", FN, finish_reason="length")
    assert ex.status == "truncated" and "token limit" in ex.reason


def test_braces_in_strings_and_comments_do_not_count():
    code = 'void kernel_dgemm(int m) { /* { */ const char *s = "}}"; (void)s; }\n'
    assert extract_code(f"```c\n{code}```", FN).status == "ok"


def test_json_from_fence_prose_or_bare():
    assert extract_json('Plan:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('<think>{"no": 0}</think> ok {"a": [1, 2]} done') == {"a": [1, 2]}


def test_invalid_json_raises_value_error_with_reason():
    with pytest.raises(ValueError, match="invalid JSON"):
        extract_json('```json\n{"a": 1,,}\n```')
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("nothing here")


def test_json_with_raw_line_breaks_inside_strings_is_accepted():
    # what local models write in json_object mode: a real newline inside a description
    text = '{"strategies": [{"name": "tile", "description": "Block for L2.\n\tThen unroll."}]}'
    assert extract_json(text)["strategies"][0]["description"] == "Block for L2.\n\tThen unroll."


def test_json_after_prose_with_braces_is_found():
    text = 'I would use {blocking} and {simd}. Here:\n{"a": {"b": [1, 2]}}\nThanks {x}'
    assert extract_json(text) == {"a": {"b": [1, 2]}}
