"""Malformed and hostile requests (deep nesting, huge integers, broken HTTP, unknown routes,
methods not served): each answer is a 4xx whose body is JSON with ``error``, every one is
counted in graphserve_requests_total, and integers beyond 64 bits come back exact."""

from __future__ import annotations

from bench.reliability import BAD_REQUESTS, bad_requests


def test_every_bad_request_gets_a_json_4xx_and_is_counted() -> None:
    figures = bad_requests()
    answers = figures["answers"]
    assert set(answers) == {*BAD_REQUESTS, "method DELETE", "broken request line"}
    for name, answer in answers.items():
        if name == "integer of 30 digits":
            continue
        assert 400 <= answer["status"] < 500 and answer["json_error"], (name, answer)
    for depth in ("300", "1000", "100,000"):
        answer = answers[f"nested {depth} deep"]
        assert answer["status"] == 422 and "nested deeper than 64" in answer["error"]
    assert (
        answers["integer of 5000 digits"]["status"] == 422
        and "4300 digits" in answers["integer of 5000 digits"]["error"]
    )
    assert answers["integer of 30 digits"] == {"status": 200, "json_error": False, "exact": True}
    assert answers["broken request line"]["status"] == 400
    assert answers["unknown route"]["status"] == 404 and answers["method DELETE"]["status"] == 405
    counted = sum(figures["requests_total"].values())
    assert counted == len(answers)  # every answer, the ones no graph saw included
