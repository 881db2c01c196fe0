//===- Trace.h - DS_TRACE: a Chrome trace of the run ----------*- C++ -*-===//
//
// DS_TRACE=FILE.json records a span for every program call (prefill, decode
// step, MTP draft) with its token count, and on the GPU under
// DS_CUDA_PROFILE=1 for every kernel call as well (timed alone there). Rank
// 0 writes them at the end of a successful run in the Chrome trace event
// format (chrome://tracing, ui.perfetto.dev). Spans are recorded by the
// thread that runs the programs; names must be string literals.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_TRACE_H
#define DS_LIB_RUNTIME_TRACE_H

#include <cstdint>
#include <string>

namespace dsrt {
namespace trace {

/// Whether DS_TRACE names a file.
bool enabled();

/// Microseconds on the clock spans use (steady, from an arbitrary origin).
double nowUs();

/// A complete span [startUs, endUs); tokens < 0: none.
void record(const char *name, const char *category, double startUs,
            double endUs, int64_t tokens = -1);

/// A span from construction to destruction, when tracing.
class Span {
public:
  Span(const char *name, const char *category, int64_t tokens = -1)
      : name(name), category(category), tokens(tokens),
        start(enabled() ? nowUs() : 0) {}
  ~Span() {
    if (enabled())
      record(name, category, start, nowUs(), tokens);
  }

private:
  const char *name, *category;
  int64_t tokens;
  double start;
};

/// Writes the spans to DS_TRACE's file (through a temporary, so a failed
/// write leaves no partial file); false with *error naming the file.
/// *count: the spans written.
bool write(size_t *count, std::string *error);

} // namespace trace
} // namespace dsrt

#endif // DS_LIB_RUNTIME_TRACE_H
