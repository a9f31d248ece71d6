import pytest

import explorer as ex
import explorer.models

# `make unit` runs `-m "not integration and not browser and not slow"`: a test that loads a real
# model must say so with @pytest.mark.integration, or it would slip into the quick loop.
MODEL_FIXTURES = {"default_model"}


def pytest_collection_modifyitems(config, items):
    unmarked = [
        item.nodeid
        for item in items
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) use the real default model but are not marked integration "
            f"(add @pytest.mark.integration): {', '.join(unmarked[:5])}"
        )


@pytest.fixture(autouse=True)
def _real_models_only_in_integration_tests(request, monkeypatch):
    """Outside integration tests, ex.load_model fails the test instead of loading a model."""
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(*args, **kwargs):
        pytest.fail(
            f"{request.node.nodeid} loads a real model (ex.load_model): mark it @pytest.mark.integration",
            pytrace=False,
        )

    monkeypatch.setattr(ex, "load_model", refuse)
    monkeypatch.setattr(explorer.models, "load_model", refuse)


@pytest.fixture(scope="session")
def default_model():
    """The real default packaged model, loaded once for the whole run."""
    return ex.load_model(ex.DEFAULT_MODEL)
