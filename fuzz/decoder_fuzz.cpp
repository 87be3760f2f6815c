// libFuzzer target for stream::Decoder: any bytes, under several mappings,
// must decode or be rejected with a one-line reason; never crash, hang, leak
// or read out of bounds (built with ASan/UBSan, see fuzz/README.md).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "config/config.h"
#include "stream/decoder.h"
#include "stream/event.h"

namespace {

struct Decoders {
  Decoders() : plain({}, {}), custom(CustomMapping(), {}), pattern(PatternMapping(), {}) {}
  static clv::config::MappingOptions CustomMapping() {
    clv::config::MappingOptions mapping;
    mapping.user_id_field = "customer";
    mapping.type_aliases = {{"order", "purchase"}, {"bad", "nonsense"}};
    mapping.default_type = "page_view";
    mapping.ts_format = "rfc3339";
    return mapping;
  }
  static clv::config::MappingOptions PatternMapping() {
    clv::config::MappingOptions mapping;
    mapping.ts_format = "%Y-%m-%dT%H:%M:%S%z";
    return mapping;
  }
  clv::stream::Decoder plain;
  clv::stream::Decoder custom;
  clv::stream::Decoder pattern;
};

void Check(clv::stream::Decoder& decoder, std::string_view bytes) {
  clv::stream::Event event;
  std::string reason;
  bool ok = decoder.Decode(bytes, 1767225600000, &event, &reason);
  if (ok ? event.user_id.empty()
         : (reason.empty() || reason.find('\n') != std::string::npos || reason.size() > 400)) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Decoders decoders;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Check(decoders.plain, bytes);
  Check(decoders.custom, bytes);
  Check(decoders.pattern, bytes);
  return 0;
}
