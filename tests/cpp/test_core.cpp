// core/progress_bar.h: the terminal bar's text, the periodic lines of a log (driven by a fake clock),
// and durations written for people.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "fewstep/core/malloc_tuning.h"
#include "fewstep/core/progress_bar.h"

namespace {

std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[512];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(ProgressBar, RendersCountsRateAndValues) {
  fewstep::ProgressBar bar(1000, "train", /*enabled=*/false);
  EXPECT_FALSE(bar.active());
  EXPECT_FALSE(bar.logging());
  const std::string line = bar.render(370, 12.0, {{"loss", 0.0123}, {"lr", 2e-4}});
  EXPECT_NE(line.find("train  37%|"), std::string::npos) << line;
  EXPECT_NE(line.find("370/1000 [00:12<00:20, 30.8 it/s, loss=0.0123, lr=0.0002]"), std::string::npos) << line;
  EXPECT_EQ(bar.render(370, 12.0, {{"loss", 0.0123}}, /*bar=*/false), "train  37% 370/1000 [00:12<00:20, 30.8 it/s, loss=0.0123]");
}

TEST(ProgressBar, LogLinesEveryIntervalAndAFinalOne) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  double now = 100.0;
  {
    fewstep::ProgressBar bar(100, "sample", fewstep::ProgressOutput::kLines, 30.0, out, [&] { return now; });
    EXPECT_TRUE(bar.logging());
    for (int i = 1; i <= 100; ++i) {
      now += 1.0;  // one step a second: lines after 30, 60 and 90 s
      bar.update(i, {{"nfe", double(i)}});
    }
  }  // the destructor closes: a final line
  const std::string text = read_all(out);
  std::fclose(out);
  EXPECT_EQ(count(text, "\n"), 4u) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  EXPECT_EQ(text.find("\033"), std::string::npos) << text;
  EXPECT_NE(text.find("sample  30% 30/100 [00:30<01:10, 1 it/s, nfe=30]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sample  90% 90/100"), std::string::npos) << text;
  EXPECT_NE(text.find("sample 100% 100/100 [01:40<00:00, 1 it/s, nfe=100] (done in 1 min 40 s)\n"),
            std::string::npos)
      << text;
}

TEST(ProgressBar, ShortRunsAndTerminalOnlyBarsPrintNothingToALog) {
  std::FILE* out = std::tmpfile();
  double now = 0.0;
  {
    fewstep::ProgressBar bar(10, "quick", fewstep::ProgressOutput::kLines, 30.0, out, [&] { return now; });
    for (int i = 1; i <= 10; ++i) now += 1.0, bar.update(i);
  }
  {
    // A tmpfile is no terminal: kTerminalOnly stays silent; kAuto logs.
    fewstep::ProgressBar bar(10, "term", fewstep::ProgressOutput::kTerminalOnly, 0.0, out, [&] { return now; });
    EXPECT_FALSE(bar.active());
    EXPECT_FALSE(bar.logging());
    bar.update(5);
  }
  {
    fewstep::ProgressBar bar(10, "auto", fewstep::ProgressOutput::kAuto, 0.0, out, [&] { return now; });
    EXPECT_TRUE(bar.logging());
  }
  const std::string text = read_all(out);
  std::fclose(out);
  EXPECT_EQ(text, "");
}

TEST(ProgressBar, IntervalFromTheEnvironment) {
  ::setenv("FEWSTEP_PROGRESS_INTERVAL", "5", 1);
  EXPECT_EQ(fewstep::default_progress_interval(), 5.0);
  ::setenv("FEWSTEP_PROGRESS_INTERVAL", "soon", 1);
  EXPECT_EQ(fewstep::default_progress_interval(), 30.0);
  ::unsetenv("FEWSTEP_PROGRESS_INTERVAL");
  EXPECT_EQ(fewstep::default_progress_interval(), 30.0);
}

TEST(FormatDuration, ReadsAsAPersonWouldWriteIt) {
  EXPECT_EQ(fewstep::format_duration(0.00042), "0.42 ms");
  EXPECT_EQ(fewstep::format_duration(0.85), "850 ms");
  EXPECT_EQ(fewstep::format_duration(18.5244), "18.5 s");
  EXPECT_EQ(fewstep::format_duration(59.96), "1 min 00 s");
  EXPECT_EQ(fewstep::format_duration(185.4), "3 min 05 s");
  EXPECT_EQ(fewstep::format_duration(7620.0), "2 h 07 min");
  EXPECT_EQ(fewstep::format_duration(-2.0), "-2 s");
}

}  // namespace

// Applied once per process; later calls report the same settings. Under the test runner the
// environment may set FEWSTEP_MALLOC_TUNING=0 or glibc's own variables: each has its own account.
TEST(MallocTuning, AppliedOnceAndReported) {
  const std::string first = fewstep::tune_malloc_for_tensors();
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(fewstep::tune_malloc_for_tensors(), first);
#if defined(__GLIBC__)
  const char* off = std::getenv("FEWSTEP_MALLOC_TUNING");
  if ((off == nullptr || std::string(off) != "0") && std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr &&
      std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) {
    EXPECT_EQ(first, "glibc mmap_threshold=32MiB trim_threshold=1GiB");
  }
#endif
}
