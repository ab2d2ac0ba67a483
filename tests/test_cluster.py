"""The hand-over of dvc.lock entries between SLURM jobs (mpm.cluster)."""

import yaml

from mpm.cluster import merge_locks


def _lock(**stages) -> str:
    return yaml.safe_dump({"schema": "2.0", "stages": stages})


BASE = _lock(data={"md5": "d0"}, train={"md5": "t0"}, tune={"md5": "f0"})


def test_takes_only_the_stages_earlier_jobs_changed():
    trained = _lock(data={"md5": "d0"}, train={"md5": "t1"}, tune={"md5": "f0"})
    lock, taken = merge_locks(BASE, BASE, [trained])
    assert taken == ["train"]
    assert lock["stages"] == {"data": {"md5": "d0"}, "train": {"md5": "t1"}, "tune": {"md5": "f0"}}


def test_fan_in_of_two_jobs_and_the_later_one_wins_a_clash():
    first = _lock(data={"md5": "d1"}, train={"md5": "t1"}, tune={"md5": "f0"})
    second = _lock(data={"md5": "d0"}, train={"md5": "t2"}, tune={"md5": "f0"})
    lock, taken = merge_locks(BASE, BASE, [first, second])
    assert lock["stages"] == {"data": {"md5": "d1"}, "train": {"md5": "t2"}, "tune": {"md5": "f0"}}
    assert taken == ["data", "train"]


def test_a_repository_without_a_lock_takes_every_stage():
    lock, taken = merge_locks(None, None, [BASE])
    assert lock["schema"] == "2.0" and lock["stages"] == yaml.safe_load(BASE)["stages"]
    assert sorted(taken) == ["data", "train", "tune"]


def test_keeps_this_jobs_own_entries_that_no_earlier_job_changed():
    ours = _lock(data={"md5": "d0"}, train={"md5": "t0"}, tune={"md5": "f9"})
    trained = _lock(data={"md5": "d0"}, train={"md5": "t1"}, tune={"md5": "f0"})
    lock, _ = merge_locks(BASE, ours, [trained])
    assert lock["stages"]["tune"] == {"md5": "f9"} and lock["stages"]["train"] == {"md5": "t1"}
