"""The one rule for object keys and file names (services/common/keys.py), as one table."""

from __future__ import annotations

import pytest

from services.common.keys import (
    choose_output_stems,
    is_key_of_job,
    is_valid_filename,
    is_valid_stem,
    job_folder_of,
    job_prefix,
    object_key,
    output_names,
    parse_key,
    safe_filename,
    strip_image_extension,
    unique_filename,
)

JOB = "0b8a4f4e-8d0b-4d6e-9a53-2f6f0d1c9e11"

# (name, valid as a file name of a job): every service checks names with is_valid_filename.
NAMES = [
    ("scan.dcm", True), ("brain.nii.gz", True), ("a", True), ("_x", True), ("-x", True),
    ("x" * 200, True), ("x" * 201, False), ("", False), (".", False), ("..", False),
    (".hidden", False), ("a/b", False), ("a\\b", False), ("a b.png", False), ("a\x00.png", False),
    ("a\n.png", False), ("b\u00e9b\u00e9.png", False), ("scan%2F.png", False),
]


@pytest.mark.parametrize(("name", "valid"), NAMES)
def test_filename_rule(name: str, valid: bool) -> None:
    assert is_valid_filename(name) is valid
    if valid:
        assert parse_key(object_key("alice", JOB, name)) == ("alice", JOB, name)
    else:
        with pytest.raises(ValueError):
            object_key("alice", JOB, name)


@pytest.mark.parametrize(
    ("user", "job"),
    [("..", JOB), ("a/b", JOB), ("", JOB), ("alice", "not-a-uuid"), ("alice", JOB.upper()),
     ("alice", "../" + JOB)],
)
def test_keys_refuse_bad_user_and_job(user: str, job: str) -> None:
    with pytest.raises(ValueError):
        object_key(user, job, "scan.png")


@pytest.mark.parametrize(
    "key", ["alice/x/scan.png", f"alice/{JOB}", f"alice/{JOB}/a/b.png", f"/alice/{JOB}/a.png", ""]
)
def test_parse_key_refuses_what_was_not_built(key: str) -> None:
    with pytest.raises(ValueError):
        parse_key(key)


def test_key_of_job_is_inside_that_folder_only() -> None:
    assert is_key_of_job(f"alice/{JOB}/a.png", "alice", JOB)
    assert not is_key_of_job(f"bob/{JOB}/a.png", "alice", JOB)
    assert not is_key_of_job(f"alice/{JOB}/../x/a.png", "alice", JOB)


@pytest.mark.parametrize(
    ("key", "folder"),
    [
        (f"alice/{JOB}/a.png", ("alice", JOB)),
        (f"alice/{JOB}/deeper/x", ("alice", JOB)),  # not built by the platform, still in the folder
        (f"alice/{JOB}/", None), (f"alice/{JOB}", None), ("alice/not-a-job/a.png", None),
        (f"alice/{JOB.upper()}/a.png", None), (f"../{JOB}/a.png", None), (f"/alice/{JOB}/a.png", None),
        ("stray-object", None), ("", None),
    ],
)
def test_job_folder_of_a_key(key: str, folder: tuple[str, str] | None) -> None:
    assert job_folder_of(key) == folder
    if folder is not None:
        assert key.startswith(job_prefix(*folder))


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd\x00.png", "passwd.png"),
        ("C:\\Users\\x\\scan.dcm", "scan.dcm"),
        ("...hidden.png", "hidden.png"),
        ("my scan (1).nii.gz", "my_scan__1_.nii.gz"),
        ("b\u00e9b\u00e9.png", "b_b_.png"),
        ("", "file"),
        ("..", "file"),
        ("a/b/", "file"),
        ("x" * 300 + ".nii.gz", "x" * 121 + ".nii.gz"),
    ],
)
def test_safe_filename(raw: str, safe: str) -> None:
    assert safe_filename(raw) == safe
    assert len(safe) <= 128 and is_valid_filename(safe)


def test_unique_filename_keeps_extension_and_length() -> None:
    taken = {"scan.nii.gz", "scan-1.nii.gz"}
    assert unique_filename("scan.nii.gz", taken) == "scan-2.nii.gz"
    assert unique_filename("SCAN.nii.gz", taken) == "SCAN-2.nii.gz"
    long = "y" * 124 + ".png"
    new = unique_filename(long, {long.lower()})
    assert new.endswith("-1.png") and len(new) == 128


def test_names_from_clients_give_valid_outputs() -> None:
    """The longest name a client can get still leaves room for every output suffix."""
    name = safe_filename("z" * 500 + ".dcm")
    (stem,) = choose_output_stems([name])
    assert is_valid_stem(stem)
    assert all(map(is_valid_filename, output_names(stem)))

@pytest.mark.parametrize(
    ("name", "stem"),
    [("scan.nii.gz", "scan"), ("scan.NII", "scan"), ("ct.dcm", "ct"), ("x.jpeg", "x"),
     ("series.zip", "series"), ("noext", "noext"), ("a.b.png", "a.b"), (".png", ".png")],
)
def test_strip_image_extension(name: str, stem: str) -> None:
    assert strip_image_extension(name) == stem


@pytest.mark.parametrize(
    "inputs",
    [
        ["a.png", "a.dcm", "a_processed.png"],
        ["a.png", "A.jpg", "a_2.png", "a_2_processed.nii.gz"],
        ["scan.nii.gz", "scan.nii", "scan_preview.png", "scan_2.dcm"],
        ["x_processed.png", "x.png", "x_processed_processed.png"],
        [".png", "output.png"],
        ["scan.dcm", "scan_input.png"],
        ["a.dcm", "a_processed.jpg", "b.zip", "b_input.nii.gz"],
    ],
)
def test_output_stems_never_collide(inputs: list[str]) -> None:
    stems = choose_output_stems(inputs)
    assert len(stems) == len(inputs)
    outputs = [o.casefold() for s in stems for o in output_names(s)]
    assert len(set(outputs)) == len(outputs), "two tasks share an output name"
    assert not set(outputs) & {i.casefold() for i in inputs}, "an output would overwrite an input"


def test_output_stems_simple_cases_keep_the_name() -> None:
    assert choose_output_stems(["scan.dcm", "brain.nii.gz"]) == ["scan", "brain"]
    # "a_processed.png" is an input, so the stem "a" is not allowed for a.png.
    stems = choose_output_stems(["a.png", "a.dcm", "a_processed.png"])
    assert stems[2] == "a_processed"
    assert "a" not in stems and len(set(stems)) == 3


