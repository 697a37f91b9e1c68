// The library's version. CMakeLists.txt reads the three numbers below for project(VERSION), so the package
// version, the pkg-config files, `creditguard --version` and this header cannot disagree.
#pragma once

#define CREDITGUARD_VERSION_MAJOR 0
#define CREDITGUARD_VERSION_MINOR 1
#define CREDITGUARD_VERSION_PATCH 0

/// MAJOR * 100000 + MINOR * 100 + PATCH, comparable like BOOST_VERSION: 0.1.0 is 100.
#define CREDITGUARD_VERSION \
    (CREDITGUARD_VERSION_MAJOR * 100000 + CREDITGUARD_VERSION_MINOR * 100 + CREDITGUARD_VERSION_PATCH)

#define CREDITGUARD_DETAIL_STRINGIZE2(x) #x
#define CREDITGUARD_DETAIL_STRINGIZE(x) CREDITGUARD_DETAIL_STRINGIZE2(x)
/// "MAJOR.MINOR.PATCH"
#define CREDITGUARD_VERSION_STRING                                                                \
    CREDITGUARD_DETAIL_STRINGIZE(CREDITGUARD_VERSION_MAJOR)                                       \
    "." CREDITGUARD_DETAIL_STRINGIZE(CREDITGUARD_VERSION_MINOR) "." CREDITGUARD_DETAIL_STRINGIZE( \
        CREDITGUARD_VERSION_PATCH)
