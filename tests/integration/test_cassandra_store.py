"""The real Cassandra (cluster/services.sh starts it) under the FaceStore contract."""

from __future__ import annotations

from store.config import CassandraSettings
from tests.store_contract import StoreContract


class TestCassandraStore(StoreContract):
    def open(self, request, tmp_path, num_shards, meta_rules):
        from store.cassandra import CassandraFaceStore

        host, port = request.getfixturevalue("cassandra_endpoint")
        keyspace = request.getfixturevalue("cassandra_keyspaces")(num_shards)
        settings = CassandraSettings(hosts=[host], port=port, keyspace=keyspace, max_in_flight=16)
        return CassandraFaceStore(settings, num_shards, meta_rules=meta_rules)

    def reopen(self, store, num_shards):
        from store.cassandra import CassandraFaceStore

        return CassandraFaceStore(store.settings, num_shards)
