// Event files for `clv replay` and `clv train`: JSONL and CSV/whitespace tables.
//
// EventFileReader streams a file line by line and yields one JSON object text
// per event, so the same field mapping (config "mapping") applies to every
// input. Which of the two a file is comes from its content, not its name
// ("auto": a first non-blank '{' is JSONL):
//   * jsonl: each non-empty line is returned as is (not validated here: the
//     stream decoder sends bad lines to the dead-letter topic).
//   * csv:   a header line (or CsvOptions::columns) names the columns; each
//     row becomes {"<column>": value, ...} in column order. A field that
//     parses completely as a number becomes a JSON number, except numbers
//     with leading zeros ("00042" stays a string: ids) and columns listed in
//     string_columns. Empty fields are left out of the object.
//     delimiter ',' (RFC 4180 quotes "a,b" and "" inside quotes, one line per
//     record), '\t', or ' ' = any run of spaces/tabs (leading ones ignored).
// Errors name file:line.
//
// Example:
//   std::unique_ptr<EventFileReader> reader;
//   auto s = EventFileReader::Open("orders.csv", "auto", {}, &reader);
//   std::string json; int64_t line = 0;
//   while (reader->Next(&json, &line)) { ... }
//   if (!reader->status().ok()) { ... }   // stopped by an error, not EOF
//
// Thread-safety: one reader per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "connectors/kafka.h"

namespace clv::config {
struct MappingOptions;
}  // namespace clv::config

namespace clv::connectors {

struct CsvOptions {
  // ',' or '\t', or ' ' for "any run of whitespace". With format "auto" and
  // delimiter_given false it is picked per file: ',' for .csv, '\t' for
  // .tsv; for other names ',' when the first line holds a comma, else ' '.
  char delimiter = ',';
  // Format "auto": keep `delimiter` as set (from the config) instead.
  bool delimiter_given = false;
  // The first line names the columns. With `columns` also set, the header is
  // skipped and `columns` wins.
  bool header = true;
  // Column names when the file has no header (or to rename them).
  std::vector<std::string> columns = {};
  // Columns always kept as JSON strings (e.g. ids, yyyymmdd dates).
  std::set<std::string> string_columns = {};
};

class EventFileReader {
 public:
  // format: "jsonl", "csv", or "auto": by content, whatever the file is
  // called: when the first byte that is not whitespace (after a UTF-8 BOM)
  // is '{', JSONL; otherwise a CSV/whitespace table (delimiter as described
  // at CsvOptions::delimiter). An empty file is JSONL (no events).
  static Status Open(const std::string& path, const std::string& format, const CsvOptions& csv,
                     std::unique_ptr<EventFileReader>* reader);
  virtual ~EventFileReader() = default;
  // Next event as JSON text and its 1-based line number. False at end of file
  // or on error; status() tells which.
  virtual bool Next(std::string* json, int64_t* line_no) = 0;
  // Ok at EOF; the error (with file:line) that stopped Next() otherwise.
  virtual const Status& status() const = 0;
  // Column names in use (csv), empty for jsonl.
  virtual const std::vector<std::string>& columns() const = 0;
};

// Event ids of file rows (clv replay, clv train, clv eval, clv fit-baseline):
// a row without an event id (no event-id column, an empty cell, a JSONL line
// without the field) gets the id "<file basename>:<line>". Identical rows are
// separate events (CDNOW lists several orders of one customer and day as
// identical rows), while replaying or loading the same file again, from any
// directory, repeats the ids, so the second time every row is a duplicate.
// Two different files with the same name are the same source: rename one.
// Kafka messages without an id keep the decoder's content hash.
std::string FileRowId(const std::string& path, int64_t line);

// Adds "<field>":"<id>" at the front of a JSON object text that lacks the
// field (absent or null); other bytes stay as they were. False, text
// unchanged, when `json` is not a JSON object or already has the field.
bool AddRowId(std::string* json, const std::string& field, const std::string& id);

// Reader settings for `clv replay`, `clv train`, `clv eval` and
// `clv fit-baseline` from the config's mapping: `format` is the command's
// --format ("auto" | "jsonl" | "csv" | "ws" = whitespace table) and becomes
// what Open() takes; `columns` (--columns) override mapping.csv_columns and
// mean "no header line". Ids (and ts under a strftime or RFC 3339
// ts_format) stay strings.
CsvOptions CsvOptionsFor(const config::MappingOptions& mapping,
                         const std::vector<std::string>& columns, std::string* format);

struct ReplayOptions {
  std::string topic;
  // When set: rows without this field (the mapping's event_id_field) get
  // FileRowId(source_path, line) in it.
  std::string row_id_field = "";
  std::string source_path = "";
  // Message key: key_of(json) when set; else the value of this top-level
  // field (string as is, numbers as their text); else no key.
  std::string key_field = "";
  std::function<std::string(std::string_view json)> key_of = {};
  // Stop after this many events (0 = all).
  int64_t max_events = 0;
};

// Produces every event of `reader` to options.topic through `sink` and
// flushes. *events gets the number sent. Errors name file:line or topic.
Status ReplayFile(EventFileReader* reader, KafkaSink* sink, const ReplayOptions& options,
                  int64_t* events);

// Value of a top-level field of a JSON object text as a string ("" when absent
// or not a scalar). Parses the whole object (nlohmann-json); fine for replay.
std::string JsonFieldAsString(std::string_view json, const std::string& field);

}  // namespace clv::connectors
