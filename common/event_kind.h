// EventKind: the vocabulary of event types, shared by the decoder (stream/),
// the scorers (models/) and the simulator (sim/). The numbers are stored
// (user state, model files): append new kinds, never renumber.
//
// Example:
//   clv::EventKind kind;
//   if (!clv::ParseEventKind("add_to_cart", &kind)) { ...unknown type... }
//   std::puts(clv::EventKindName(kind));  // "add_to_cart"
//
// Thread-safety: constants and pure functions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace clv {

enum class EventKind : uint8_t {
  kPageView = 0,
  kSearch = 1,
  kAddToCart = 2,
  kRemoveFromCart = 3,
  kWishlist = 4,
  kAdClick = 5,
  kPurchase = 6,
  kRefund = 7,
  kProfile = 8,
};
inline constexpr int kEventKindCount = 9;

// Canonical names, by kind number (the "type" field of an event).
inline constexpr std::array<const char*, kEventKindCount> kEventKindNames = {
    "page_view", "search",   "add_to_cart", "remove_from_cart", "wishlist",
    "ad_click",  "purchase", "refund",      "profile"};

// Canonical name of `kind`; "unknown" for a number outside the enum.
constexpr const char* EventKindName(EventKind kind) {
  const auto index = static_cast<size_t>(kind);
  return index < kEventKindNames.size() ? kEventKindNames[index] : "unknown";
}

// Canonical name -> kind; false when unknown.
constexpr bool ParseEventKind(std::string_view name, EventKind* kind) {
  for (size_t i = 0; i < kEventKindNames.size(); ++i) {
    if (name == kEventKindNames[i]) {
      *kind = static_cast<EventKind>(i);
      return true;
    }
  }
  return false;
}

}  // namespace clv
