"""Public error texts keep what went wrong and drop paths on the server and SQL."""

from __future__ import annotations

from pathlib import Path

from app.core.public_text import public_message


def test_paths_in_the_data_dir_become_relative_and_others_lose_their_folders(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    text = (
        f"FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{data_dir}/datasets/abc/manifest.json' (loaded by /usr/lib/python3/site.py)"
    )
    assert public_message(text, data_dir) == (
        "FileNotFoundError: [Errno 2] No such file or directory: "
        "'datasets/abc/manifest.json' (loaded by site.py)"
    )


def test_sql_and_its_parameters_are_cut(tmp_path: Path) -> None:
    text = (
        "OperationalError: (psycopg.OperationalError) server closed the connection\n"
        "[SQL: UPDATE job SET heartbeat_at=%(heartbeat_at)s WHERE job.id = %(id_1)s]\n"
        "[parameters: {'heartbeat_at': '2026-11-27', 'id_1': 'abc'}]\n"
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)"
    )
    assert public_message(text, tmp_path) == (
        "OperationalError: (psycopg.OperationalError) server closed the connection"
    )


def test_urls_and_relative_names_are_left_alone(tmp_path: Path) -> None:
    text = "could not load base model 'org/model' from https://huggingface.co/org/model"
    assert public_message(text, tmp_path) == text
