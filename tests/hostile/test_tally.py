"""The tally itself: a marked case is counted under its family."""

import pytest


@pytest.mark.hostile("self-check")
def test_a_marked_case_is_tallied(request: pytest.FixtureRequest) -> None:
    assert ("hostile", "self-check") in request.node.user_properties
