//===- Json.cpp - libdsrt's strict JSON reader ----------------------------===//

#include "Json.h"

#include <cstring>
#include <unordered_set>

using namespace dsrt;

namespace {

/// Strict RFC 8259 JSON, except that numbers must be integers that fit in
/// int64 (safetensors headers hold nothing else) and nesting is bounded.
class JsonParser {
public:
  JsonParser(const char *text, size_t size) : p_(text), end_(text + size),
                                              begin_(text) {}

  /// Parses one document followed only by whitespace.
  bool parse(Json *out, std::string *error) {
    bool ok = value(out, 0);
    if (ok) {
      skipSpace();
      if (p_ != end_)
        ok = fail("unexpected data after the top-level value");
    }
    if (!ok)
      *error = error_;
    return ok;
  }

private:
  static constexpr int kMaxDepth = 16;

  bool fail(const char *message) {
    error_ = std::string(message) + " at byte " + std::to_string(p_ - begin_);
    return false;
  }
  void skipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r'))
      ++p_;
  }
  bool literal(const char *word) {
    size_t n = std::strlen(word);
    if (size_t(end_ - p_) < n || std::memcmp(p_, word, n) != 0)
      return fail("invalid literal");
    p_ += n;
    return true;
  }

  bool value(Json *out, int depth) {
    skipSpace();
    if (p_ == end_)
      return fail("unexpected end of JSON");
    switch (*p_) {
    case '{':
      return object(out, depth + 1);
    case '[':
      return array(out, depth + 1);
    case '"':
      out->kind = Json::String;
      return string(&out->string);
    case 't':
      out->kind = Json::Bool;
      out->boolean = true;
      return literal("true");
    case 'f':
      out->kind = Json::Bool;
      return literal("false");
    case 'n':
      out->kind = Json::Null;
      return literal("null");
    default:
      if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9'))
        return number(out);
      return fail("unexpected character");
    }
  }

  bool object(Json *out, int depth) {
    if (depth > kMaxDepth)
      return fail("JSON nested too deeply");
    out->kind = Json::Object;
    std::unordered_set<std::string> seen;
    ++p_; // '{'
    skipSpace();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      skipSpace();
      if (p_ == end_ || *p_ != '"')
        return fail("expected a string key");
      std::string key;
      if (!string(&key))
        return false;
      // Hashed: a V3 index has ~90k keys in one object.
      if (!seen.insert(key).second)
        return fail(("duplicate key '" + key + "'").c_str());
      skipSpace();
      if (p_ == end_ || *p_ != ':')
        return fail("expected ':'");
      ++p_;
      out->keys.push_back(std::move(key));
      out->items.emplace_back();
      if (!value(&out->items.back(), depth))
        return false;
      skipSpace();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == '}') {
        ++p_;
        return true;
      }
      return fail("expected ',' or '}'");
    }
  }

  bool array(Json *out, int depth) {
    if (depth > kMaxDepth)
      return fail("JSON nested too deeply");
    out->kind = Json::Array;
    ++p_; // '['
    skipSpace();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      out->items.emplace_back();
      if (!value(&out->items.back(), depth))
        return false;
      skipSpace();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == ']') {
        ++p_;
        return true;
      }
      return fail("expected ',' or ']'");
    }
  }

  bool hex4(uint32_t *out) {
    if (end_ - p_ < 4)
      return fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = *p_++;
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        v |= c - 'A' + 10;
      else
        return fail("invalid \\u escape");
    }
    *out = v;
    return true;
  }

  static void appendUtf8(std::string *s, uint32_t cp) {
    if (cp < 0x80) {
      s->push_back(char(cp));
    } else if (cp < 0x800) {
      s->push_back(char(0xC0 | (cp >> 6)));
      s->push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(char(0xE0 | (cp >> 12)));
      s->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(char(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(char(0xF0 | (cp >> 18)));
      s->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(char(0x80 | (cp & 0x3F)));
    }
  }

  bool string(std::string *out) {
    ++p_; // '"'
    for (;;) {
      if (p_ == end_)
        return fail("unterminated string");
      unsigned char c = *p_;
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20)
        return fail("control character in string");
      if (c != '\\') {
        out->push_back(char(c));
        ++p_;
        continue;
      }
      if (++p_ == end_)
        return fail("unterminated string");
      char e = *p_++;
      switch (e) {
      case '"': out->push_back('"'); break;
      case '\\': out->push_back('\\'); break;
      case '/': out->push_back('/'); break;
      case 'b': out->push_back('\b'); break;
      case 'f': out->push_back('\f'); break;
      case 'n': out->push_back('\n'); break;
      case 'r': out->push_back('\r'); break;
      case 't': out->push_back('\t'); break;
      case 'u': {
        uint32_t cp = 0;
        if (!hex4(&cp))
          return false;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          return fail("unpaired surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          // A high surrogate must be followed by an escaped low one.
          uint32_t lo = 0;
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
            return fail("unpaired surrogate in \\u escape");
          p_ += 2;
          if (!hex4(&lo))
            return false;
          if (lo < 0xDC00 || lo > 0xDFFF)
            return fail("unpaired surrogate in \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        --p_;
        return fail("invalid escape in string");
      }
    }
  }

  bool number(Json *out) {
    out->kind = Json::Int;
    bool negative = false;
    if (*p_ == '-') {
      negative = true;
      ++p_;
    }
    if (p_ == end_ || *p_ < '0' || *p_ > '9')
      return fail("invalid number");
    if (*p_ == '0' && p_ + 1 != end_ && p_[1] >= '0' && p_[1] <= '9')
      return fail("leading zero in number");
    // Accumulate as a negative number so INT64_MIN fits.
    int64_t v = 0;
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
      int digit = *p_ - '0';
      if (v < (INT64_MIN + digit) / 10)
        return fail("integer out of range");
      v = v * 10 - digit;
      ++p_;
    }
    if (p_ != end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E'))
      return fail("only integers are supported");
    if (!negative) {
      if (v == INT64_MIN)
        return fail("integer out of range");
      v = -v;
    }
    out->integer = v;
    return true;
  }

  const char *p_, *end_, *begin_;
  std::string error_;
};

} // namespace

bool dsrt::parseJson(const char *text, size_t size, Json *out,
                     std::string *error) {
  return JsonParser(text, size).parse(out, error);
}

std::string dsrt::jsonQuote(const std::string &s) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\b': out += "\\b"; break;
    case '\f': out += "\\f"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      if (c < 0x20) {
        out += "\\u00";
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 15]);
      } else {
        out.push_back(ch);
      }
    }
  }
  return out + "\"";
}
