// Loads event files (JSONL, CSV, whitespace tables) into a models::Dataset
// through the same Decoder the service uses, so `clv train`, `clv eval` and
// `clv fit-baseline` see exactly what the stream would see.
//
// Rows without an event id get the file's row id "<basename>:<line>"
// (connectors::FileRowId): identical rows count as separate events, the same
// file given twice is all duplicates the second time.
//
// A mapping without a value column (mapping.amount_field "") gives a
// Dataset with has_order_values false, every purchase worth 1.
//
// Malformed rows are skipped and counted; the first few are reported with
// file:line and the decoder's reason.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "models/dataset.h"

namespace clv::stream {

struct LoadStats {
  int64_t rows = 0;
  int64_t events = 0;
  int64_t rejected = 0;
  int64_t duplicates = 0;
  std::vector<std::string> first_errors;  // "file:line: reason"
};

// format: "auto" (by extension), "jsonl", "csv", or "ws" (whitespace table).
// `columns`: column names for headerless tables (empty = first line is a header).
bool LoadDataset(const std::vector<std::string>& paths, const config::Config& config,
                 const std::string& format, const std::vector<std::string>& columns,
                 models::Dataset* dataset, LoadStats* stats, std::string* error);

}  // namespace clv::stream
