// A string that never prints itself: for API keys and other credentials.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace creditguard {

/// Holds a secret (an API key). Streaming it prints "***"; the only way to the value is reveal(),
/// which the HTTP layer calls when it writes the header. The storage is wiped on destruction.
class SecretString {
public:
    SecretString() = default;
    explicit SecretString(std::string value) : value_(std::move(value)) {}
    SecretString(const SecretString&) = default;
    SecretString(SecretString&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
    SecretString& operator=(const SecretString& other) {
        if (this != &other) {
            wipe();
            value_ = other.value_;
        }
        return *this;
    }
    SecretString& operator=(SecretString&& other) noexcept {
        if (this != &other) {
            wipe();
            value_ = std::move(other.value_);
            other.wipe();
        }
        return *this;
    }
    ~SecretString() { wipe(); }

    /// The secret itself. Never log or format the result.
    [[nodiscard]] const std::string& reveal() const noexcept { return value_; }
    [[nodiscard]] bool empty() const noexcept { return value_.empty(); }

    /// Compares with a candidate in time independent of where they differ (for the mock's key check).
    [[nodiscard]] bool equals(std::string_view candidate) const noexcept {
        if (candidate.size() != value_.size()) return false;
        unsigned char diff = 0;
        for (std::size_t i = 0; i < value_.size(); ++i)
            diff |= static_cast<unsigned char>(value_[i] ^ candidate[i]);
        return diff == 0;
    }

    friend std::ostream& operator<<(std::ostream& os, const SecretString&) { return os << "***"; }

private:
    void wipe() noexcept {
        volatile char* p = value_.data();
        for (std::size_t i = 0; i < value_.size(); ++i)
            p[i] = 0;
        value_.clear();
    }
    std::string value_;
};

/// Replaces every occurrence of `secret` in `text` by "***" (used on provider messages, which may echo a key).
inline std::string redact(std::string text, const SecretString& secret) {
    const std::string& s = secret.reveal();
    if (s.empty()) return text;
    for (std::size_t pos = text.find(s); pos != std::string::npos; pos = text.find(s, pos + 3))
        text.replace(pos, s.size(), "***");
    return text;
}

}  // namespace creditguard
