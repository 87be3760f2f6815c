// FNV-1a 64: the one hash of clvstream whose values are stored (event id
// hashes in state, attribute hashes in user state and models, model version
// ids). Simple and the same on every platform and release: never change it.
//
// Example:
//   uint64_t h = clv::Fnv1a("order-17");               // whole text
//   h = clv::Fnv1a(clv::kFnv1aOffset, &x, sizeof(x));  // fold bytes into a running hash
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace clv {

// The standard FNV-1a 64 offset basis and prime.
inline constexpr uint64_t kFnv1aOffset = 14695981039346656037ULL;
inline constexpr uint64_t kFnv1aPrime = 1099511628211ULL;

// Folds `bytes` bytes at `data` into the running hash `hash`.
inline uint64_t Fnv1a(uint64_t hash, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= kFnv1aPrime;
  }
  return hash;
}

// FNV-1a 64 of `text`, starting from `seed` (the offset basis by default).
inline uint64_t Fnv1a(std::string_view text, uint64_t seed = kFnv1aOffset) {
  return Fnv1a(seed, text.data(), text.size());
}

}  // namespace clv
