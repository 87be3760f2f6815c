// Public constants of the RocksDB StateStore (state/state_store.h), for tools
// that read or write its meta column family (`clv inspect`, tests).
//
// The store writes kStateSchemaVersion under kMetaSchemaVersionKey when it
// creates a directory and refuses to open a directory whose schema version is
// newer than this build's (an older clvstream must not write a newer layout).
// The processor records the serving model under kMetaModelVersionKey through
// CommitBatch::meta; the store itself does not interpret it.
//
// Thread-safety: constants only.
#pragma once

#include <string_view>

namespace clv::state {

// Version of the on-disk layout (column families, key encodings). The
// UserState value encoding is versioned separately (kUserStateVersion).
inline constexpr int kStateSchemaVersion = 1;

inline constexpr std::string_view kMetaSchemaVersionKey = "schema_version";
inline constexpr std::string_view kMetaModelVersionKey = "model_version";

// Column family names.
inline constexpr std::string_view kUsersColumnFamily = "users";
inline constexpr std::string_view kOffsetsColumnFamily = "offsets";
inline constexpr std::string_view kTimersColumnFamily = "timers";
inline constexpr std::string_view kMetaColumnFamily = "meta";
// Event ids seen within the dedup retention: day (BE int32) + id hash (BE u64) -> "".
inline constexpr std::string_view kEventIdsColumnFamily = "event_ids";

}  // namespace clv::state
