"""The query models read FindFace's query strings (colon names, comma lists, its boolean words), and what
they refuse is the spec's BAD_PARAM naming the parameter; the OpenAPI document lists exactly their fields.
No Ray: the models behind a FastAPI app of their own, with the service's error handlers."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient

from serve_app.handlers import install_error_handlers
from serve_app.queries import DetectQuery, ListQuery, SearchQuery, face_filter


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/list")
    def listing(request: Request, query: Annotated[ListQuery, Query()]) -> dict:
        found = face_filter(query, request.query_params)
        return {"query": query.model_dump(), "filter": repr(found)}

    @app.get("/search")
    def search(query: Annotated[SearchQuery, Query()]) -> dict:
        return query.model_dump()

    @app.post("/detect")
    def detect(query: Annotated[DetectQuery, Query()]) -> dict:
        return query.model_dump()

    return TestClient(app)


def refused(response, param: str) -> dict:
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["code"], body["param"]) == ("BAD_PARAM", param), body
    return body


def test_lists_come_repeated_or_comma_separated_and_names_keep_their_colons(client):
    body = client.get("/list?id:in=1,2&id:in=3&id:gte=1&meta:in:name=ann,eve&meta:gte:cam=3").json()
    assert body["query"]["id_in"] == [1, 2, 3] and body["query"]["id_gte"] == 1
    assert "('name', ('ann', 'eve'))" in body["filter"] and "('cam', '3')" in body["filter"]
    assert client.get("/search?looks_like=face:g/1&gallery=a,b&gallery=c").json()["gallery"] == ["a", "b", "c"]
    assert client.post("/detect?attribute=age,gender&facen=on&landmarks=0").json() == {
        **DetectQuery().model_dump(),
        "attribute": ["age", "gender"],
        "facen": True,
    }


@pytest.mark.parametrize(
    "query, param",
    [
        ("facen=maybe", "facen"),
        ("facen=t", "facen"),
        ("detector=fast", "detector"),
        ("attribute=beard", "attribute"),
        ("roi=1,2,3", "roi"),
    ],
)
def test_detect_options_refused_by_name(client, query, param):
    refused(client.post(f"/detect?{query}"), param)


@pytest.mark.parametrize(
    "query, param",
    [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("id:in=1,x", "id:in"),
        (f"id:gte={2**64}", "id:gte"),
        ("threshold=1.5", "threshold"),
        ("sort=name", "sort"),
        ("looks_like=person:1", "looks_like"),
        ("id:near=3", "id:near"),
        ("meta:near:x=1", "meta:near:x"),
        ("meta:in=1", "meta:in"),
        ("meta:gte:cam=1&meta:gte:cam=2", "meta:gte:cam"),
    ],
)
def test_list_options_refused_by_name(client, query, param):
    body = refused(client.get(f"/list?{query}"), param)
    assert param in body["desc"]


def test_a_search_over_galleries_needs_looks_like_and_gallery_names(client):
    refused(client.get("/search"), "looks_like")
    refused(client.get("/search?looks_like=face:g/1&gallery=a/b"), "gallery")


def test_the_document_lists_each_model_field_under_its_wire_name(client):
    document = client.app.openapi()
    listed = {p["name"] for p in document["paths"]["/list"]["get"]["parameters"]}
    assert listed == {field.alias or name for name, field in ListQuery.model_fields.items()}
