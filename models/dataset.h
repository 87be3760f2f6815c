// Offline event logs for fitting and evaluating scorers.
//
// A Dataset is every user's events in time order, plus the period it covers.
// LoadCdnow() reads the CDNOW files (../shared/data/cdnow): each row becomes
// one purchase event at 00:00 UTC of its date (several rows on one day stay
// separate purchases; UpdateHistory counts them as one purchase day).
//
// Example:
//   models::Dataset data;
//   std::string error;
//   if (!models::LoadCdnow(path, &data, &error)) { ...error names file:line... }
//   auto calibration = data.SliceBefore(models::DateToMs(1997, 10, 1));
//   auto actual = models::ActualInWindow(data, cutoff_ms, 39 * 7 * models::kMsPerDay);
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/time.h"
#include "models/scorer.h"

namespace clv::models {

using clv::kMsPerDay;  // common/units.h
using clv::kMsPerWeek;

// Epoch ms of 00:00 UTC on a date; "YYYY-MM-DD" of the UTC day of ts_ms.
using clv::DateToMs;  // common/time.h
using clv::MsToDate;

struct UserSequence {
  std::string user_id;
  std::vector<StepEvent> events;  // in time order (stable: file order breaks ties)
};

struct Dataset {
  std::vector<UserSequence> users;  // sorted by user_id
  int64_t start_ms = 0;             // earliest event time (inclusive)
  int64_t end_ms = 0;               // end of the covered period (exclusive)
  // "key=value" text of the profile attribute pairs seen, by AttrHash of it
  // (for people reading a model's attribute vocabulary).
  std::map<uint64_t, std::string> attr_texts;
  // False for data without a value column (mapping.amount_field ""): every
  // purchase then has amount 1, so "spend" is the number of purchases, and
  // the commands judge and report purchases instead of money.
  bool has_order_values = true;

  // Events with ts < cutoff_ms; users left without events are dropped.
  // The result covers [start_ms, min(end_ms, cutoff_ms)).
  Dataset SliceBefore(int64_t cutoff_ms) const;
  size_t EventCount() const;
};

// What a user really did in [begin_ms, begin_ms + horizon_ms).
struct WindowOutcome {
  double spend = 0;            // purchases minus refunds
  uint32_t purchases = 0;      // purchase events
  uint32_t purchase_days = 0;  // distinct UTC days with a purchase
};

// One entry per user of `data`, in the same order (zeros for users who did
// nothing in the window).
std::vector<WindowOutcome> ActualInWindow(const Dataset& data, int64_t begin_ms,
                                          int64_t horizon_ms);

// Reads a CDNOW transaction file, either layout:
//   master: header line, then `customer_id date(YYYYMMDD) number_of_cds dollar_value`
//   sample: no header, `customer_id id_in_sample date number_of_cds dollar_value`
// user_id is the first column as written ("00004"). The period is
// [first date, last date + 1 day). False + *error ("file:line: what") on
// failure.
bool LoadCdnow(const std::string& path, Dataset* dataset, std::string* error);

// Builds a Dataset from (user, event) pairs in any order: groups by user,
// sorts by time (stable), sets the period to [first event, last event day + 1 day).
struct UserEvent {
  std::string user_id;
  StepEvent event;
};
Dataset MakeDataset(std::vector<UserEvent> events);

}  // namespace clv::models
