# Command-line tools: tools/<name>.cpp and bench/<name>.cpp -> ./<name>, copied to the
# repository root after each build so that the README's usage lines work from a clean clone.
# ll_tools builds just them (what `make demo` needs), not the tests.
file(GLOB LL_TOOL_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tools/*.cpp ${PROJECT_SOURCE_DIR}/bench/*.cpp)
add_custom_target(ll_tools)
foreach(src ${LL_TOOL_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_compile_options(${name} PRIVATE ${LL_WARNINGS})
  target_link_libraries(${name} PRIVATE ll_engine)
  add_dependencies(ll_tools ${name})
  add_custom_command(TARGET ${name} POST_BUILD
    COMMAND ${CMAKE_COMMAND} -E copy_if_different $<TARGET_FILE:${name}> ${PROJECT_SOURCE_DIR}/${name})
endforeach()
