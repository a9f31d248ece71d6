import pytest

import explorer as ex


@pytest.fixture(scope="session")
def default_model():
    """The real default packaged model, loaded once for the whole run."""
    return ex.load_model(ex.DEFAULT_MODEL)
