"""What the service relies on from any FaceStore: one contract, run by each backend's tier.

tests/unit/test_sqlite_store.py runs it on the embedded store and tests/integration/test_cassandra_store.py
on the real Cassandra; each subclass says how its backend opens (``open``) and reopens (``reopen``).
"""

from __future__ import annotations

import numpy as np
import pytest

from store import FaceExists, FaceNotFound, FaceRecord, GalleryExists, GalleryNotFound, InvalidValue, add_face, shard_of
from store.meta import MetaField, MetaRules


def unit(seed: int, dim: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class StoreContract:
    def open(self, request, tmp_path, num_shards: int, meta_rules: MetaRules | None):
        raise NotImplementedError

    def reopen(self, store, num_shards: int):
        """The same file or keyspace opened with another shard count."""
        raise NotImplementedError

    @pytest.fixture
    def open_store(self, request, tmp_path):
        """Opens the FaceStore under test for a shard count; what the test left is dropped afterwards."""
        opened = []

        def factory(num_shards: int, meta_rules: MetaRules | None = None):
            opened.append(self.open(request, tmp_path, num_shards, meta_rules))
            return opened[-1]

        yield factory
        for face_store in opened:
            try:
                for gallery in face_store.list_galleries():
                    face_store.delete_gallery(gallery.name)
            except Exception:  # noqa: BLE001 - a store the test closed on purpose
                pass
            face_store.close()

    @pytest.fixture
    def store(self, open_store):
        return open_store(3)

    def test_galleries_are_created_listed_and_deleted_with_their_faces(self, store):
        store.create_gallery("ppl")
        store.create_gallery("cars-2")
        with pytest.raises(GalleryExists):
            store.create_gallery("ppl")
        add_face(store, FaceRecord("ppl", 7, unit(1)))
        assert [g.name for g in store.list_galleries()] == ["cars-2", "ppl"]
        assert store.get_gallery("ppl").dim == 8
        store.delete_gallery("ppl")
        with pytest.raises(GalleryNotFound):
            store.get_gallery("ppl")
        store.create_gallery("ppl")
        assert store.count_faces("ppl") == 0

    @pytest.mark.parametrize("name", ["", "a" * 65, "white space", "slash/name", "ünï"])
    def test_bad_gallery_names_are_refused(self, store, name):
        with pytest.raises(InvalidValue) as caught:
            store.create_gallery(name)
        assert caught.value.param == "gallery"

    def test_a_face_round_trips_with_its_vector_meta_and_attributes(self, store):
        store.create_gallery("ppl")
        meta = {"name": "Ann", "age": 31, "tags": ["a", "b"], "cams": [1, 2]}
        add_face(store, FaceRecord("ppl", 2**64 - 1, unit(2) * 3, meta, {"age": 30}))
        face = store.get_face("ppl", 2**64 - 1)
        np.testing.assert_allclose(face.facen, unit(2), atol=1e-6)  # stored unit length
        assert face.meta == meta and face.attributes == {"age": 30}
        with pytest.raises(FaceExists):
            add_face(store, FaceRecord("ppl", 2**64 - 1, unit(3)))
        with pytest.raises(FaceNotFound):
            store.get_face("ppl", 5)
        with pytest.raises(GalleryNotFound):
            store.get_face("nope", 5)

    def test_meta_patch_replaces_listed_keys_and_keeps_the_others(self, store):
        store.create_gallery("ppl")
        add_face(store, FaceRecord("ppl", 1, unit(1), {"a": "x", "b": 2}))
        assert store.update_meta("ppl", 1, {"b": 3, "c": ["z"]}).meta == {"a": "x", "b": 3, "c": ["z"]}
        assert store.get_face("ppl", 1).meta == {"a": "x", "b": 3, "c": ["z"]}

    @pytest.mark.parametrize("meta", [{"a": 1.5}, {"a": {"x": 1}}, {"a": [1, "x"]}, {"a": True}, {"a": None}, [1]])
    def test_meta_values_outside_the_spec_are_refused(self, store, meta):
        store.create_gallery("ppl")
        with pytest.raises(InvalidValue):
            add_face(store, FaceRecord("ppl", 1, unit(1), meta))

    def test_the_first_face_fixes_the_gallery_dimension(self, store):
        store.create_gallery("ppl")
        add_face(store, FaceRecord("ppl", 1, unit(1, dim=8)))
        with pytest.raises(InvalidValue, match="8-d") as caught:
            add_face(store, FaceRecord("ppl", 2, unit(2, dim=16)))
        assert caught.value.param == "facen"

    def test_the_first_face_binds_the_gallery_to_its_model(self, store):
        store.create_gallery("ppl")
        assert store.get_gallery("ppl").model is None
        add_face(store, FaceRecord("ppl", 1, unit(1), model="sface_2021dec.v1"))
        assert (store.get_gallery("ppl").dim, store.get_gallery("ppl").model) == (8, "sface_2021dec.v1")
        with pytest.raises(InvalidValue, match="sface_2021dec.v1") as caught:
            add_face(store, FaceRecord("ppl", 2, unit(2), model="dlib_resnet.v1"))
        assert caught.value.param == "facen"
        add_face(store, FaceRecord("ppl", 3, unit(3)))  # a raw vector of unknown model: its length fits
        assert store.count_faces("ppl") == 2

    def test_a_bulk_add_keeps_good_faces_and_writes_nothing_of_bad_ones(self, store):
        store.create_gallery("ppl")
        add_face(store, FaceRecord("ppl", 1, unit(1)))
        results = store.add_faces(
            [
                FaceRecord("ppl", 2, unit(2)),
                FaceRecord("ppl", 1, unit(3)),  # exists
                FaceRecord("ppl", 3, unit(4), {"bad": 1.5}),  # bad meta
                FaceRecord("ppl", 4, np.zeros(8, np.float32)),  # zero vector
                FaceRecord("nope", 5, unit(5)),  # no gallery
                FaceRecord("ppl", -1, unit(6)),  # not unsigned
                FaceRecord("ppl", 6, unit(7)),
            ]
        )
        assert [type(r).__name__ if r else None for r in results] == [
            None,
            "FaceExists",
            "InvalidValue",
            "InvalidValue",
            "GalleryNotFound",
            "InvalidValue",
            None,
        ]
        assert store.count_faces("ppl") == 3
        with pytest.raises(FaceNotFound):
            store.get_face("ppl", 3)

    def test_partitions_hold_exactly_their_shards_faces_in_id_order(self, store):
        store.create_gallery("ppl")
        ids = [0, 1, 2**63 - 1, 2**63, 2**64 - 1] + list(range(100, 160))
        store.add_faces([FaceRecord("ppl", i, unit(i % 1000)) for i in ids])
        seen = []
        for shard in range(3):
            after, part = None, []
            while page := store.scan_partition("ppl", shard, after_id=after, limit=7):
                part += [face.face_id for face in page]
                after = page[-1].face_id
            assert part == sorted(part)
            assert all(shard_of("ppl", face_id, 3) == shard for face_id in part)
            seen += part
        assert sorted(seen) == sorted(ids)

    def test_writes_survive_reopening_the_store(self, open_store):
        first = open_store(2)
        first.create_gallery("ppl")
        add_face(first, FaceRecord("ppl", 9, unit(9), {"k": "v"}))
        first.close()
        again = open_store(2)
        assert again.get_face("ppl", 9).meta == {"k": "v"}
        with pytest.raises(ValueError, match="laid out for 2 shards"):
            self.reopen(again, 4)

    def test_many_faces_are_read_at_once_skipping_missing_ones(self, store):
        store.create_gallery("ppl")
        store.add_faces([FaceRecord("ppl", i, unit(i), {"i": i}) for i in (1, 5, 9)])
        found = store.get_faces("ppl", [9, 2, 1])
        assert sorted(found) == [1, 9] and found[9].meta == {"i": 9}
        settled = store.get_faces("ppl", [9, 2, 1], settled=True)  # what a refresh after a timed-out write reads
        assert {i: face.meta for i, face in settled.items()} == {1: {"i": 1}, 9: {"i": 9}}

    def test_the_same_id_twice_in_one_bulk_add_keeps_the_first_face(self, store):
        store.create_gallery("ppl")
        results = store.add_faces(
            [FaceRecord("ppl", 5, unit(1), {"first": 1}), FaceRecord("ppl", 5, unit(2), {"second": 1})]
        )
        assert results[0] is None and type(results[1]).__name__ == "FaceExists"
        assert store.get_face("ppl", 5).meta == {"first": 1}

    def test_a_large_bulk_add_with_some_existing_ids_adds_exactly_the_new_ones(self, store):
        store.create_gallery("ppl")
        store.add_faces([FaceRecord("ppl", i, unit(i)) for i in range(0, 300, 7)])
        results = store.add_faces([FaceRecord("ppl", i, unit(i), {"i": i}) for i in range(300)])
        assert [i for i, r in enumerate(results) if r is not None] == list(range(0, 300, 7))
        assert store.count_faces("ppl") == 300
        assert store.get_face("ppl", 8).meta == {"i": 8} and store.get_face("ppl", 7).meta == {}

    def test_the_change_log_names_every_face_written_since_a_time(self, store):
        import time

        store.create_gallery("ppl")
        assert store.add_faces([FaceRecord("ppl", i, unit(i)) for i in range(1, 7)]) == [None] * 6
        time.sleep(0.05)
        since = time.time()
        time.sleep(0.05)
        assert store.add_faces([FaceRecord("ppl", 7, unit(7))]) == [None]
        store.update_meta("ppl", 2, {"name": "ann"})
        store.delete_face("ppl", 3)
        changed = set()
        for shard in range(store.num_shards):
            part = store.changed_since("ppl", shard, since)
            assert all(shard_of("ppl", face_id, store.num_shards) == shard for face_id in part)
            changed |= part
        assert changed == {2, 3, 7}
        assert store.changed_since("ppl", 0, time.time() - 30 * 24 * 3600) is None  # beyond the log's reach
        store.delete_gallery("ppl")
        store.create_gallery("ppl")
        assert all(store.changed_since("ppl", shard, since - 1) == set() for shard in range(store.num_shards))
        assert isinstance(store.store_id, str) and len(store.store_id) == 32

    def test_meta_bounds_hold_for_what_is_stored_after_a_patch_too(self, open_store):
        store = open_store(2, MetaRules(max_bytes=200, max_keys=3, max_string_length=10, max_list_items=3))
        store.create_gallery("ppl")
        for meta, param in (
            ({"a": "x" * 11}, "meta.a"),
            ({"a": [1, 2, 3, 4]}, "meta.a"),
            ({"a": 2**63}, "meta.a"),
            ({"a": -(2**63) - 1}, "meta.a"),
            ({"k" * 65: 1}, "meta"),
            ({"a": 1, "b": 2, "c": 3, "d": 4}, "meta"),
            ({"a": ["x" * 10] * 3, "b": "y" * 10, "c": "z" * 10}, None),
        ):
            if param is None:
                add_face(store, FaceRecord("ppl", 9, unit(9), meta))  # at the bounds: kept
                continue
            with pytest.raises(InvalidValue) as refused:
                add_face(store, FaceRecord("ppl", 1, unit(1), meta))
            assert refused.value.param == param
        add_face(store, FaceRecord("ppl", 1, unit(1), {"a": 2**63 - 1, "b": -(2**63)}))
        with pytest.raises(InvalidValue) as refused:
            store.update_meta("ppl", 1, {"c": 1, "d": 2})  # four fields once merged
        assert refused.value.param == "meta"
        assert store.get_face("ppl", 1).meta == {"a": 2**63 - 1, "b": -(2**63)}
        with pytest.raises(InvalidValue):
            store.update_meta("ppl", 9, {"a": ["x" * 10] * 3 + ["y"]})  # four items

    def test_a_meta_scheme_types_fields_refuses_others_and_fills_defaults(self, open_store):
        scheme = {
            "name": MetaField(kind="string"),
            "camera": MetaField(kind="unsigned", default=0),
            "tags": MetaField(kind="set[string]", default=["visitor"]),
            "zones": MetaField(kind="set[unsigned]"),
        }
        store = open_store(2, MetaRules(scheme=scheme))
        store.create_gallery("ppl")
        add_face(store, FaceRecord("ppl", 1, unit(1), {"name": "ann", "zones": [3, 1, 3]}))
        assert store.get_face("ppl", 1).meta == {"camera": 0, "tags": ["visitor"], "name": "ann", "zones": [3, 1]}
        for meta, param in (
            ({"nick": "x"}, "meta.nick"),
            ({"camera": -1}, "meta.camera"),
            ({"camera": "3"}, "meta.camera"),
            ({"tags": "vip"}, "meta.tags"),
            ({"zones": [1, "2"]}, "meta.zones"),
            ({"name": 7}, "meta.name"),
        ):
            with pytest.raises(InvalidValue) as refused:
                add_face(store, FaceRecord("ppl", 2, unit(2), meta))
            assert refused.value.param == param
        with pytest.raises(InvalidValue):
            store.update_meta("ppl", 1, {"nick": "x"})
        assert store.update_meta("ppl", 1, {"camera": 5}).meta["camera"] == 5
        with pytest.raises(ValueError):
            MetaRules(scheme={"camera": MetaField(kind="unsigned", default=-1)})
