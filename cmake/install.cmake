# Install rules: headers, the component libraries, a CMake package (find_package(creditguard CONFIG
# [COMPONENTS core providers redis testing])) and pkg-config files. Each component has its own export set,
# so a package asked only for `core` never loads the targets that need OpenSSL or hiredis.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CREDITGUARD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/creditguard)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/creditguard DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT creditguard_development)
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/CHANGELOG.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT creditguard_development)

foreach(component IN ITEMS core providers redis testing)
  install(TARGETS creditguard_${component} EXPORT creditguard-${component}-targets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT creditguard_development
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT creditguard_runtime
          RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT creditguard_runtime)
  install(EXPORT creditguard-${component}-targets NAMESPACE creditguard:: DESTINATION ${CREDITGUARD_CMAKE_DIR}
          COMPONENT creditguard_development)
endforeach()
install(TARGETS creditguard EXPORT creditguard-umbrella-targets)
install(EXPORT creditguard-umbrella-targets NAMESPACE creditguard:: DESTINATION ${CREDITGUARD_CMAKE_DIR}
        COMPONENT creditguard_development)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/creditguardConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/creditguardConfig.cmake INSTALL_DESTINATION ${CREDITGUARD_CMAKE_DIR})
# 0.x: a minor version may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/creditguardConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/creditguardConfig.cmake ${PROJECT_BINARY_DIR}/creditguardConfigVersion.cmake
        DESTINATION ${CREDITGUARD_CMAKE_DIR} COMPONENT creditguard_development)

# pkg-config: creditguard (core, providers, redis) and creditguard-core. The prefix is found relative to the
# .pc file, so `cmake --install --prefix P` works for any P. The libraries are static: what they link
# privately (hiredis, Boost.URL, OpenSSL) is listed in Requires/Libs, not in the .private fields.
file(RELATIVE_PATH CREDITGUARD_PC_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
string(REGEX REPLACE "/$" "" CREDITGUARD_PC_PREFIX "\${pcfiledir}/${CREDITGUARD_PC_PREFIX}")
foreach(pc IN ITEMS creditguard creditguard-core)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
          COMPONENT creditguard_development)
endforeach()
