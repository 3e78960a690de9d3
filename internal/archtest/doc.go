// Package archtest holds no code, only the test that keeps ARCHITECTURE.md
// true: every package of the module is in its layer diagram, and every
// import of one fedsim package by another points down the diagram.
package archtest
