#include <array>
#include <string_view>

#include "models/scorer.h"

namespace clv::models {

namespace {
constexpr std::array<const char*, kEventKindCount> kEventKindNames = {
    "page_view", "search", "add_to_cart", "remove_from_cart", "wishlist",
    "ad_click",  "purchase", "refund",    "profile"};
}  // namespace

const char* EventKindName(EventKind kind) {
  auto index = static_cast<size_t>(kind);
  return index < kEventKindNames.size() ? kEventKindNames[index] : "unknown";
}

bool ParseEventKind(std::string_view name, EventKind* kind) {
  for (size_t i = 0; i < kEventKindNames.size(); ++i) {
    if (name == kEventKindNames[i]) {
      *kind = static_cast<EventKind>(i);
      return true;
    }
  }
  return false;
}

void Scorer::InitState(float* state) const {
  for (int i = 0; i < state_size(); ++i) state[i] = 0.0f;
}

}  // namespace clv::models
