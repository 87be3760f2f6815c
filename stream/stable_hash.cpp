#include "stream/event.h"

namespace clv::stream {

uint64_t StableHash64(std::string_view bytes) {
  // FNV-1a 64: simple, stable across platforms and releases (hashes are stored).
  uint64_t hash = 14695981039346656037ULL;
  for (unsigned char byte : bytes) {
    hash ^= byte;
    hash *= 1099511628211ULL;
  }
  return hash;
}

}  // namespace clv::stream
