#include "models/dataset.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>

#include "common/time.h"

namespace clv::models {

namespace {

bool ParseDouble(std::string_view text, double* value) {
  const char* end = text.data() + text.size();
  auto result = std::from_chars(text.data(), end, *value);
  return result.ec == std::errc() && result.ptr == end && std::isfinite(*value);
}

std::vector<std::string_view> SplitWhitespace(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    const size_t begin = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > begin) fields.push_back(line.substr(begin, i - begin));
  }
  return fields;
}

}  // namespace

Dataset Dataset::SliceBefore(int64_t cutoff_ms) const {
  Dataset slice;
  slice.start_ms = start_ms;
  slice.end_ms = std::min(end_ms, cutoff_ms);
  slice.attr_texts = attr_texts;
  slice.has_order_values = has_order_values;
  for (const UserSequence& user : users) {
    // Events are in time order, so the kept ones are a prefix.
    auto end = std::partition_point(user.events.begin(), user.events.end(),
                                    [&](const StepEvent& e) { return e.ts_ms < cutoff_ms; });
    if (end == user.events.begin()) continue;
    slice.users.push_back(UserSequence{user.user_id, {user.events.begin(), end}});
  }
  return slice;
}

size_t Dataset::EventCount() const {
  size_t count = 0;
  for (const UserSequence& user : users) count += user.events.size();
  return count;
}

std::vector<WindowOutcome> ActualInWindow(const Dataset& data, int64_t begin_ms,
                                          int64_t horizon_ms) {
  std::vector<WindowOutcome> outcomes(data.users.size());
  const int64_t end_ms = begin_ms + horizon_ms;
  for (size_t u = 0; u < data.users.size(); ++u) {
    WindowOutcome& outcome = outcomes[u];
    int64_t last_day = 0;
    bool any_day = false;
    for (const StepEvent& event : data.users[u].events) {
      if (event.ts_ms < begin_ms || event.ts_ms >= end_ms) continue;
      if (event.kind == EventKind::kPurchase) {
        outcome.spend += event.amount;
        ++outcome.purchases;
        const int64_t day = UtcDay(event.ts_ms);
        if (!any_day || day != last_day) ++outcome.purchase_days;  // events are time ordered
        any_day = true;
        last_day = day;
      } else if (event.kind == EventKind::kRefund) {
        outcome.spend -= event.amount;
      }
    }
  }
  return outcomes;
}

Dataset MakeDataset(std::vector<UserEvent> events) {
  Dataset dataset;
  std::map<std::string, std::vector<StepEvent>> by_user;
  bool first = true;
  for (UserEvent& item : events) {
    if (first || item.event.ts_ms < dataset.start_ms) dataset.start_ms = item.event.ts_ms;
    if (first || item.event.ts_ms >= dataset.end_ms) {
      dataset.end_ms = (UtcDay(item.event.ts_ms) + 1) * kMsPerDay;
    }
    first = false;
    by_user[item.user_id].push_back(item.event);
  }
  dataset.users.reserve(by_user.size());
  for (auto& [user_id, user_events] : by_user) {
    std::stable_sort(user_events.begin(), user_events.end(),
                     [](const StepEvent& a, const StepEvent& b) { return a.ts_ms < b.ts_ms; });
    dataset.users.push_back(UserSequence{user_id, std::move(user_events)});
  }
  return dataset;
}

bool LoadCdnow(const std::string& path, Dataset* dataset, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = path + ": cannot open CDNOW file";
    return false;
  }
  std::vector<UserEvent> events;
  std::string line;
  int line_number = 0;
  size_t columns = 0;  // 4 (master) or 5 (sample), fixed by the first data row
  bool seen_content = false;
  auto fail = [&](const std::string& what) {
    *error = path + ":" + std::to_string(line_number) + ": " + what;
    return false;
  };
  while (std::getline(in, line)) {
    ++line_number;
    auto fields = SplitWhitespace(line);
    if (fields.empty()) continue;
    const bool first_content = !seen_content;
    seen_content = true;
    if (first_content) {
      double ignored = 0;
      if (!ParseDouble(fields[0], &ignored)) continue;  // the master file's header line
    }
    if (columns == 0) {
      if (fields.size() != 4 && fields.size() != 5) {
        return fail("expected 4 columns (id date qty value) or 5 (id id2 date qty value), got " +
                    std::to_string(fields.size()));
      }
      columns = fields.size();
    } else if (fields.size() != columns) {
      return fail("expected " + std::to_string(columns) + " columns like the rows above, got " +
                  std::to_string(fields.size()));
    }
    const size_t date_column = columns - 3;
    UserEvent item;
    item.user_id = std::string(fields[0]);
    item.event.kind = EventKind::kPurchase;
    if (!ParseCompactDate(fields[date_column], &item.event.ts_ms)) {
      return fail("bad date '" + std::string(fields[date_column]) + "' (want YYYYMMDD)");
    }
    double quantity = 0;
    if (!ParseDouble(fields[columns - 2], &quantity) || quantity < 0) {
      return fail("bad number_of_cds '" + std::string(fields[columns - 2]) + "'");
    }
    if (!ParseDouble(fields[columns - 1], &item.event.amount) || item.event.amount < 0) {
      return fail("bad dollar_value '" + std::string(fields[columns - 1]) + "'");
    }
    events.push_back(std::move(item));
  }
  if (in.bad()) {
    *error = path + ": read error after line " + std::to_string(line_number);
    return false;
  }
  if (events.empty()) {
    *error = path + ": no transactions found";
    return false;
  }
  *dataset = MakeDataset(std::move(events));
  return true;
}

}  // namespace clv::models
