"""pytest fixtures for the integration tests, built on aiqtest (the shared helpers: Env,
Sim, Worker, Results, submit, ...). Test files import helpers from aiqtest, not from here."""
import pytest

from aiqtest import Env


@pytest.fixture
def aiq_env(tmp_path):
    env = Env(tmp_path)
    try:
        yield env
    finally:
        env.close()
