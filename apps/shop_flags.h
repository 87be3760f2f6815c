// Flags of the synthetic shop, shared by `clv gen`, `clv demo` and `clv bench`.
#pragma once

#include <string>

#include "common/event_kind.h"
#include "sim/synthetic_shop.h"

namespace CLI {
class App;
}

namespace clv::apps {

struct ShopFlags {
  sim::ShopOptions options;
  std::string start;    // YYYY-MM-DD, overrides options.start_ms
  std::string horizon;  // "365d", overrides options.horizon_days
  std::string profile;  // "wholesale,cents": sim::ApplyShopProfiles
};
void AddShopFlags(CLI::App& cmd, ShopFlags& flags);
// Applies the profiles, start/horizon, and validates; prints the error and returns false.
bool ResolveShopFlags(ShopFlags& flags, const char* command);

// The input topic an event goes to when events are split by kind:
// purchases and refunds -> orders, profile -> profiles, the rest -> clickstream.
const std::string& TopicForKind(EventKind kind, const std::string& clickstream,
                                const std::string& orders, const std::string& profiles);

}  // namespace clv::apps
