// The one logging entry point of clvstream: structured diagnostics as logfmt
// lines. Header-level, standard library only (models/ builds with libtorch
// alone, so this must not need spdlog).
//
//   clv::Log(clv::LogLevel::kInfo, "partitions assigned", {{"added", 3}, {"assigned", 8}});
//   // ts=2026-12-01T09:20:30.123Z level=info msg="partitions assigned" added=3 assigned=8
//
// By default lines at info and above go to stderr. A program may route them
// elsewhere: SetLogSink() receives the level and the line without
// `ts=`/`level=` (apps/ hands it to spdlog, whose pattern adds them);
// SetLogLevel() drops lines below a level.
//
// Thread-safety: every function may be called from any thread; lines are
// written one at a time (under one mutex), never interleaved.
//
// What goes through Log and what does not:
//   * Log: what an operator or a log shipper reads about a running process or a
//     library's work: service lifecycle (partitions, state restored, stop),
//     broker errors, a trainer's per-epoch and fitted-prior lines, the
//     effective configuration.
//   * plain stdout/stderr text (not Log): what a command prints for the person
//     who typed it: usage and flag errors, tables and reports, progress bars and
//     counters of `clv train`/`clv gen`/`clv bench`, "dashboard at http://...".
#pragma once

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <ctime>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace clv {

enum class LogLevel { kTrace = 0, kDebug, kInfo, kWarn, kError, kOff };

// "trace", "debug", "info", "warn", "error", "off" (config option log.level).
inline std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace: return "trace";
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "info";
}

// The level a name gives; false (and *level unchanged) for an unknown name.
inline bool ParseLogLevel(std::string_view name, LogLevel* level) {
  for (LogLevel candidate : {LogLevel::kTrace, LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn,
                             LogLevel::kError, LogLevel::kOff}) {
    if (LogLevelName(candidate) == name) {
      *level = candidate;
      return true;
    }
  }
  return false;
}

// One key=value pair of a line. Numbers are written as numbers (floating point
// with 6 significant digits, whole from 100000 up), text quoted when it has to be.
struct LogField {
  LogField(std::string_view key, std::string_view text) : key(key), value(text) {}
  LogField(std::string_view key, const char* text) : key(key), value(text) {}
  LogField(std::string_view key, const std::string& text) : key(key), value(text) {}
  LogField(std::string_view key, bool flag) : key(key), value(flag ? "true" : "false") {}
  template <std::integral Int>
  LogField(std::string_view key, Int number) : key(key), value(std::to_string(number)) {}
  template <std::floating_point Float>
  LogField(std::string_view key, Float number) : key(key) {
    // Large values (events per second) as whole numbers, not 1.23457e+06.
    const double x = static_cast<double>(number);
    const bool whole = std::fabs(x) >= 1e5 && std::fabs(x) < 1e15;
    char buffer[32];
    auto result =
        whole ? std::to_chars(buffer, buffer + sizeof(buffer), x, std::chars_format::fixed, 0)
              : std::to_chars(buffer, buffer + sizeof(buffer), x, std::chars_format::general, 6);
    value.assign(buffer, result.ptr);
  }

  std::string_view key;
  std::string value;
};

// Receives one line without its ts= and level= parts: `msg="..." key=value`.
using LogSink = std::function<void(LogLevel, std::string_view line)>;

namespace log_detail {

struct State {
  std::atomic<int> level{static_cast<int>(LogLevel::kInfo)};
  std::mutex mutex;  // guards sink; held while a line is written
  LogSink sink;      // empty: stderr
};

inline State& GlobalState() {
  static State state;
  return state;
}

// logfmt value: bare when it is a non-empty run of printable characters other
// than space, '"' and '='; otherwise quoted with \" \\ \n \t escaped.
inline void AppendValue(std::string_view value, std::string* line) {
  bool bare = !value.empty();
  for (char c : value) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '"' || c == '=' || c == '\\') bare = false;
  }
  if (bare) {
    line->append(value);
    return;
  }
  line->push_back('"');
  for (char c : value) {
    switch (c) {
      case '"': line->append("\\\""); break;
      case '\\': line->append("\\\\"); break;
      case '\n': line->append("\\n"); break;
      case '\t': line->append("\\t"); break;
      default: line->push_back(c);
    }
  }
  line->push_back('"');
}

inline void WriteToStderr(LogLevel level, std::string_view line) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char ts[32];
  std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &utc);
  const std::string_view name = LogLevelName(level);
  std::fprintf(stderr, "ts=%s.%03dZ level=%.*s %.*s\n", ts, static_cast<int>(millis),
               static_cast<int>(name.size()), name.data(), static_cast<int>(line.size()),
               line.data());
}

}  // namespace log_detail

// Lines below `level` are dropped (kOff drops all). Any thread, any time.
inline void SetLogLevel(LogLevel level) {
  log_detail::GlobalState().level.store(static_cast<int>(level), std::memory_order_relaxed);
}

inline bool LogEnabled(LogLevel level) {
  return level != LogLevel::kOff &&
         static_cast<int>(level) >= log_detail::GlobalState().level.load(std::memory_order_relaxed);
}

// Routes every line to `sink` (empty: back to stderr). Any thread, any time;
// the sink is called with a lock held, one line at a time, so it must not log.
inline void SetLogSink(LogSink sink) {
  log_detail::State& state = log_detail::GlobalState();
  std::lock_guard<std::mutex> lock(state.mutex);
  state.sink = std::move(sink);
}

// `msg="<message>" key=value ...`, the line a sink receives.
inline std::string FormatLogLine(std::string_view message, std::initializer_list<LogField> fields) {
  std::string line = "msg=";
  log_detail::AppendValue(message, &line);
  for (const LogField& field : fields) {
    line.push_back(' ');
    line.append(field.key);
    line.push_back('=');
    log_detail::AppendValue(field.value, &line);
  }
  return line;
}

inline void Log(LogLevel level, std::string_view message,
                std::initializer_list<LogField> fields = {}) {
  if (!LogEnabled(level)) return;
  const std::string line = FormatLogLine(message, fields);
  log_detail::State& state = log_detail::GlobalState();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (state.sink) {
    state.sink(level, line);
  } else {
    log_detail::WriteToStderr(level, line);
  }
}

}  // namespace clv
