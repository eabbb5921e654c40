package controllers

// WorstCaseTaskStatus is worstCaseTaskStatus, for the envtest suite (an
// external test package).
var WorstCaseTaskStatus = worstCaseTaskStatus
