// Event file reader and replay (see file_source.h).
#include "connectors/file_source.h"

#include <charconv>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "config/config.h"

namespace clv::connectors {
namespace {

enum class FileFormat { kJsonl, kCsv };

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

// Looks at the start of a file: *jsonl when its first byte that is not
// whitespace (after a UTF-8 BOM) is '{'; *first_line is the first non-blank
// line (for the delimiter). False when the file cannot be read.
bool SniffFile(const std::string& path, bool* jsonl, std::string* first_line) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    if (first && line.starts_with(kUtf8Bom)) line.erase(0, kUtf8Bom.size());
    first = false;
    const size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos) continue;
    *jsonl = line[start] == '{';
    *first_line = line;
    return true;
  }
  *jsonl = true;  // no content: no events either way
  return !in.bad();
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A JSON number when the whole field parses as one and is not an id with
// leading zeros ("007", "-01"); "0", "0.5", "-0.25" are numbers.
bool ToNumber(std::string_view field, nlohmann::ordered_json* out) {
  if (field.empty()) return false;
  std::string_view digits = field.front() == '-' ? field.substr(1) : field;
  if (digits.empty() || !std::isdigit(static_cast<unsigned char>(digits.front()))) return false;
  if (digits.size() > 1 && digits[0] == '0' && digits[1] != '.') return false;
  const char* begin = field.data();
  const char* end = field.data() + field.size();
  int64_t integer = 0;
  if (auto [ptr, ec] = std::from_chars(begin, end, integer); ec == std::errc() && ptr == end) {
    *out = integer;
    return true;
  }
  double real = 0;
  if (auto [ptr, ec] = std::from_chars(begin, end, real); ec == std::errc() && ptr == end) {
    *out = real;
    return true;
  }
  return false;
}

class EventFileReaderImpl final : public EventFileReader {
 public:
  EventFileReaderImpl(std::string path, FileFormat format, CsvOptions csv)
      : path_(std::move(path)), format_(format), csv_(std::move(csv)) {}

  Status Init() {
    in_.open(path_, std::ios::binary);
    if (!in_) return Status::Error("cannot open event file " + path_);
    if (format_ == FileFormat::kJsonl) return Status::Ok();
    if (csv_.delimiter != ',' && csv_.delimiter != '\t' && csv_.delimiter != ' ') {
      return Status::Error("event file " + path_ + ": delimiter must be ',', '\\t' or ' '");
    }
    columns_ = csv_.columns;
    if (csv_.header) {
      std::string line;
      std::vector<std::string> header;
      while (ReadLine(&line)) {
        if (IsBlank(line)) continue;
        if (auto s = Split(line, &header); !s.ok()) return s;
        break;
      }
      if (header.empty()) return Status::Error(Where() + ": no header line");
      if (columns_.empty()) columns_ = header;
    }
    if (columns_.empty()) {
      return Status::Error("event file " + path_ + ": no header and no column names given");
    }
    return Status::Ok();
  }

  bool Next(std::string* json, int64_t* line_no) override {
    if (!status_.ok()) return false;
    std::string line;
    while (ReadLine(&line)) {
      if (IsBlank(line)) continue;
      *line_no = line_no_;
      if (format_ == FileFormat::kJsonl) {
        *json = std::move(line);
        return true;
      }
      if (auto s = RowToJson(line, json); !s.ok()) {
        status_ = s;
        return false;
      }
      return true;
    }
    if (in_.bad()) status_ = Status::Error(Where() + ": read error");
    return false;
  }

  const Status& status() const override { return status_; }
  const std::vector<std::string>& columns() const override { return columns_; }

 private:
  bool ReadLine(std::string* line) {
    if (!std::getline(in_, *line)) return false;
    ++line_no_;
    if (line_no_ == 1 && line->starts_with(kUtf8Bom)) line->erase(0, kUtf8Bom.size());
    if (!line->empty() && line->back() == '\r') line->pop_back();
    return true;
  }

  static bool IsBlank(const std::string& line) {
    return line.find_first_not_of(" \t") == std::string::npos;
  }

  std::string Where() const { return path_ + ":" + std::to_string(line_no_); }

  Status Split(const std::string& line, std::vector<std::string>* fields) const {
    fields->clear();
    if (csv_.delimiter == ' ') {
      size_t pos = 0;
      while ((pos = line.find_first_not_of(" \t", pos)) != std::string::npos) {
        size_t end = line.find_first_of(" \t", pos);
        if (end == std::string::npos) end = line.size();
        fields->push_back(line.substr(pos, end - pos));
        pos = end;
      }
      return Status::Ok();
    }
    std::string field;
    bool quoted = false;
    bool was_quoted = false;
    for (size_t i = 0; i < line.size(); ++i) {
      char c = line[i];
      if (quoted) {
        if (c == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field.push_back('"');
            ++i;
          } else {
            quoted = false;
          }
        } else {
          field.push_back(c);
        }
      } else if (c == '"' && field.empty() && !was_quoted) {
        quoted = true;
        was_quoted = true;
      } else if (c == csv_.delimiter) {
        fields->push_back(std::move(field));
        field.clear();
        was_quoted = false;
      } else {
        field.push_back(c);
      }
    }
    if (quoted) return Status::Error(Where() + ": unterminated quoted field");
    fields->push_back(std::move(field));
    return Status::Ok();
  }

  Status RowToJson(const std::string& line, std::string* json) {
    if (auto s = Split(line, &fields_); !s.ok()) return s;
    if (fields_.size() != columns_.size()) {
      return Status::Error(Where() + ": expected " + std::to_string(columns_.size()) +
                           " fields, found " + std::to_string(fields_.size()));
    }
    nlohmann::ordered_json row = nlohmann::ordered_json::object();
    for (size_t i = 0; i < columns_.size(); ++i) {
      const std::string& field = fields_[i];
      if (field.empty()) continue;
      nlohmann::ordered_json number;
      if (!csv_.string_columns.contains(columns_[i]) && ToNumber(field, &number)) {
        row[columns_[i]] = std::move(number);
      } else {
        row[columns_[i]] = field;
      }
    }
    try {
      *json = row.dump();
    } catch (const nlohmann::json::exception& e) {  // invalid UTF-8
      return Status::Error(Where() + ": " + e.what());
    }
    return Status::Ok();
  }

  std::string path_;
  FileFormat format_;
  CsvOptions csv_;
  std::ifstream in_;
  int64_t line_no_ = 0;
  std::vector<std::string> columns_;
  std::vector<std::string> fields_;  // reused per row
  Status status_ = Status::Ok();
};

}  // namespace

Status EventFileReader::Open(const std::string& path, const std::string& format,
                             const CsvOptions& csv, std::unique_ptr<EventFileReader>* reader) {
  CsvOptions options = csv;
  FileFormat file_format = FileFormat::kCsv;
  if (format == "jsonl") {
    file_format = FileFormat::kJsonl;
  } else if (format == "auto") {
    std::string first_line;
    bool jsonl = false;
    if (!SniffFile(path, &jsonl, &first_line))
      return Status::Error("cannot open event file " + path);
    if (jsonl) {
      file_format = FileFormat::kJsonl;
    } else if (!csv.delimiter_given) {
      const std::string ext = Lower(std::filesystem::path(path).extension().string());
      options.delimiter = ext == ".csv"                               ? ','
                          : ext == ".tsv"                             ? '\t'
                          : first_line.find(',') != std::string::npos ? ','
                                                                      : ' ';
    }
  } else if (format != "csv") {
    return Status::Error("event file " + path + ": unknown format '" + format +
                         "' (jsonl, csv or auto)");
  }
  auto impl = std::make_unique<EventFileReaderImpl>(path, file_format, std::move(options));
  if (auto s = impl->Init(); !s.ok()) return s;
  *reader = std::move(impl);
  return Status::Ok();
}

CsvOptions CsvOptionsFor(const config::MappingOptions& mapping,
                         const std::vector<std::string>& columns, std::string* format) {
  CsvOptions csv;
  csv.columns = columns.empty() ? mapping.csv_columns : columns;
  csv.header = columns.empty() ? mapping.csv_header : false;
  csv.string_columns = {mapping.user_id_field, mapping.event_id_field};
  if (mapping.ts_format != "auto" && mapping.ts_format != "epoch_s" &&
      mapping.ts_format != "epoch_ms") {
    csv.string_columns.insert(mapping.ts_field);
  }
  if (*format == "ws") {
    *format = "csv";
    csv.delimiter = ' ';
  } else if (mapping.csv_delimiter != "auto") {
    // A set delimiter applies to tables; "auto" still tells JSONL by content.
    csv.delimiter = mapping.csv_delimiter == "tab"          ? '\t'
                    : mapping.csv_delimiter == "whitespace" ? ' '
                                                            : ',';
    csv.delimiter_given = true;
  }
  return csv;
}

namespace {

std::string ScalarText(const nlohmann::json& doc, const std::string& field) {
  if (!doc.is_object()) return "";
  auto it = doc.find(field);
  if (it == doc.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number() || it->is_boolean()) return it->dump();
  return "";
}

bool LacksField(const nlohmann::json& doc, const std::string& field) {
  if (!doc.is_object()) return false;
  auto it = doc.find(field);
  return it == doc.end() || it->is_null();
}

// `json` is a JSON object text: "<field>":"<id>" goes right after its '{'.
void InsertAtFront(std::string* json, const std::string& field, const std::string& id) {
  const size_t open = json->find('{');
  const size_t next = json->find_first_not_of(" \t\r\n", open + 1);
  std::string entry = nlohmann::json(field).dump() + ":" + nlohmann::json(id).dump();
  if (next != std::string::npos && (*json)[next] != '}') entry += ",";
  json->insert(open + 1, entry);
}

}  // namespace

std::string JsonFieldAsString(std::string_view json, const std::string& field) {
  return ScalarText(nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false), field);
}

std::string FileRowId(const std::string& path, int64_t line) {
  return std::filesystem::path(path).filename().string() + ":" + std::to_string(line);
}

bool AddRowId(std::string* json, const std::string& field, const std::string& id) {
  if (!LacksField(nlohmann::json::parse(*json, nullptr, /*allow_exceptions=*/false), field)) {
    return false;
  }
  InsertAtFront(json, field, id);
  return true;
}

Status ReplayFile(EventFileReader* reader, KafkaSink* sink, const ReplayOptions& options,
                  int64_t* events) {
  if (options.topic.empty()) return Status::Error("ReplayFile: no topic given");
  const bool key_from_field = !options.key_of && !options.key_field.empty();
  int64_t sent = 0;
  std::string json;
  int64_t line_no = 0;
  while ((options.max_events == 0 || sent < options.max_events) && reader->Next(&json, &line_no)) {
    std::string key;
    if (key_from_field || !options.row_id_field.empty()) {
      // One parse serves the key and the row id.
      auto doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
      if (key_from_field) key = ScalarText(doc, options.key_field);
      if (!options.row_id_field.empty() && LacksField(doc, options.row_id_field)) {
        InsertAtFront(&json, options.row_id_field, FileRowId(options.source_path, line_no));
      }
    }
    if (options.key_of) key = options.key_of(json);
    if (auto s = sink->Send(options.topic, key, json); !s.ok()) {
      return Status::Error("ReplayFile: line " + std::to_string(line_no) + ": " + s.message);
    }
    ++sent;
  }
  *events = sent;
  if (!reader->status().ok()) return reader->status();
  return sink->Flush(60000);
}

}  // namespace clv::connectors
