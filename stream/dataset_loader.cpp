#include "stream/dataset_loader.h"

#include <algorithm>
#include <map>
#include <unordered_set>

#include "connectors/file_source.h"
#include "stream/decoder.h"
#include "stream/event.h"

namespace clv::stream {

bool LoadDataset(const std::vector<std::string>& paths, const config::Config& config,
                 const std::string& format, const std::vector<std::string>& columns,
                 models::Dataset* dataset, LoadStats* stats, std::string* error) {
  Decoder decoder(config.mapping, config.validation);
  dataset->attr_texts.clear();
  dataset->has_order_values = !config.mapping.amount_field.empty();
  struct Row {
    models::StepEvent event;
    int64_t order = 0;
  };
  std::map<std::string, std::vector<Row>> by_user;
  std::unordered_set<uint64_t> seen_ids;
  int64_t order = 0;
  // A whole event log is in the past; check "too far in the future" against
  // the latest plausible time instead of the wall clock.
  const int64_t now_ms = INT64_MAX / 4;
  for (const auto& path : paths) {
    std::string reader_format = format;
    const connectors::CsvOptions csv =
        connectors::CsvOptionsFor(config.mapping, columns, &reader_format);
    std::unique_ptr<connectors::EventFileReader> reader;
    auto status = connectors::EventFileReader::Open(path, reader_format, csv, &reader);
    if (!status.ok()) {
      *error = status.message;
      return false;
    }
    std::string json;
    int64_t line = 0;
    Event event;
    std::string reason;
    while (reader->Next(&json, &line)) {
      ++stats->rows;
      if (!decoder.Decode(json, now_ms, &event, &reason)) {
        ++stats->rejected;
        if (stats->first_errors.size() < 5) {
          stats->first_errors.push_back(path + ":" + std::to_string(line) + ": " + reason);
        }
        continue;
      }
      // Rows without an event id: the file's row id (connectors/file_source.h).
      if (!event.event_id_given) {
        event.event_id_hash = StableHash64(connectors::FileRowId(path, line));
      }
      if (!seen_ids.insert(event.event_id_hash).second) {
        ++stats->duplicates;
        continue;
      }
      ++stats->events;
      models::StepEvent step{event.kind, event.ts_ms, event.amount};
      if (event.kind == models::EventKind::kProfile) {
        step.attrs = models::MakeAttrEntries(event.attrs);
        for (const auto& [key, value] : event.attrs) {
          std::string pair = key + "=" + value;
          dataset->attr_texts.emplace(models::AttrHash(pair), pair);
        }
      }
      by_user[event.user_id].push_back(Row{step, order++});
    }
    if (!reader->status().ok()) {
      *error = reader->status().message;
      return false;
    }
  }
  dataset->users.clear();
  dataset->start_ms = INT64_MAX;
  dataset->end_ms = INT64_MIN;
  for (auto& [user_id, rows] : by_user) {
    std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      return a.event.ts_ms != b.event.ts_ms ? a.event.ts_ms < b.event.ts_ms : a.order < b.order;
    });
    models::UserSequence sequence;
    sequence.user_id = user_id;
    sequence.events.reserve(rows.size());
    for (const auto& row : rows) sequence.events.push_back(row.event);
    dataset->start_ms = std::min(dataset->start_ms, sequence.events.front().ts_ms);
    dataset->end_ms = std::max(dataset->end_ms, sequence.events.back().ts_ms + 1);
    dataset->users.push_back(std::move(sequence));
  }
  if (dataset->users.empty()) {
    dataset->start_ms = dataset->end_ms = 0;
    *error = "no valid events in the given files";
    if (!stats->first_errors.empty()) *error += " (first error: " + stats->first_errors[0] + ")";
    return false;
  }
  return true;
}

}  // namespace clv::stream
