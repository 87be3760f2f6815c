// clv::Log as an operator reads it: logfmt lines with quoted text where
// needed, numbers as numbers, a level filter, and a sink the program chooses.
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "common/log.h"

namespace clv {
namespace {

// Restores stderr output at info level after each test.
class LogTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetLogSink(nullptr);
    SetLogLevel(LogLevel::kInfo);
  }
  // Routes lines into lines_.
  void Capture() {
    SetLogSink([this](LogLevel level, std::string_view line) {
      lines_.emplace_back(level, std::string(line));
    });
  }
  std::vector<std::pair<LogLevel, std::string>> lines_;
};

TEST_F(LogTest, LineIsLogfmtWithTextQuotedOnlyWhenNeeded) {
  EXPECT_EQ(FormatLogLine("partitions assigned", {{"added", 3}, {"topic", "clv.scores"}}),
            "msg=\"partitions assigned\" added=3 topic=clv.scores");
  EXPECT_EQ(FormatLogLine("x", {{"error", "broker \"a\" down\nretrying"}, {"empty", ""}}),
            "msg=x error=\"broker \\\"a\\\" down\\nretrying\" empty=\"\"");
  EXPECT_EQ(FormatLogLine("x", {{"path", std::string("a=b")}, {"ok", true}}),
            "msg=x path=\"a=b\" ok=true");
}

TEST_F(LogTest, NumbersAreWrittenAsNumbers) {
  EXPECT_EQ(FormatLogLine("x", {{"seconds", 0.1234567}, {"rate", 1234567.8}, {"n", -7LL}}),
            "msg=x seconds=0.123457 rate=1234568 n=-7");
  EXPECT_EQ(FormatLogLine("x", {{"size", size_t{42}}, {"tiny", 2.5e-9}}),
            "msg=x size=42 tiny=2.5e-09");
}

TEST_F(LogTest, SinkReceivesLinesAtOrAboveTheLevel) {
  Capture();
  SetLogLevel(LogLevel::kWarn);
  Log(LogLevel::kInfo, "dropped");
  Log(LogLevel::kWarn, "kept", {{"count", 2}});
  Log(LogLevel::kError, "also kept");
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_EQ(lines_[0].first, LogLevel::kWarn);
  EXPECT_EQ(lines_[0].second, "msg=kept count=2");
  EXPECT_EQ(lines_[1].first, LogLevel::kError);
  SetLogLevel(LogLevel::kOff);
  Log(LogLevel::kError, "silenced");
  EXPECT_EQ(lines_.size(), 2u);
}

TEST_F(LogTest, WithoutASinkLinesGoToStderrWithTimeAndLevel) {
  ::testing::internal::CaptureStderr();
  Log(LogLevel::kWarn, "broker error", {{"partition", 3}});
  Log(LogLevel::kDebug, "below the default level");
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.rfind("ts=", 0), 0u) << out;
  EXPECT_NE(out.find("Z level=warn msg=\"broker error\" partition=3\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("below the default level"), std::string::npos) << out;
}

TEST_F(LogTest, LinesFromManyThreadsArriveOneAtATime) {
  Capture();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 250; ++i) Log(LogLevel::kInfo, "tick", {{"thread", t}, {"i", i}});
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_EQ(lines_.size(), 1000u);
  for (const auto& [level, line] : lines_) EXPECT_EQ(line.rfind("msg=tick thread=", 0), 0u);
}

TEST_F(LogTest, LevelNamesAreTheConfigValues) {
  for (std::string_view name : {"trace", "debug", "info", "warn", "error", "off"}) {
    LogLevel level = LogLevel::kInfo;
    EXPECT_TRUE(ParseLogLevel(name, &level)) << name;
    EXPECT_EQ(LogLevelName(level), name);
  }
  LogLevel level = LogLevel::kWarn;
  EXPECT_FALSE(ParseLogLevel("verbose", &level));
  EXPECT_EQ(level, LogLevel::kWarn);
}

}  // namespace
}  // namespace clv
