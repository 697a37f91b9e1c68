// Precompiled header for the library: the heavy Boost headers every translation unit pulls in.
#pragma once
#include <boost/asio.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
