package controllers

// Events. The manager records events.k8s.io/v1 Events through
// controller-runtime's recorder provider, which runs client-go's events
// broadcaster (k8s.io/client-go/tools/events) over the EventsV1 client:
// started with the first Event, stopped after the manager's runnables.
// Setup makes one recorder, reporting as EventReportingController, and
// hands it to the controllers that record Events.
//
// An Event says that something a user would want to hear about happened
// (a task started, finished or stopped); it is never how a controller
// keeps state, and a lost Event loses nothing the status does not say.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// EventReportingController is the reportingController of the manager's
// Events (client-go appends the host name for reportingInstance).
const EventReportingController = "site-operator-manager"

// Actions of the manager's Events (events.k8s.io/v1 Event.action: what the
// controller did or saw happen).
const (
	// eventActionStart: a DeploymentTask's work started.
	eventActionStart = "Start"
	// eventActionComplete: every target of a DeploymentTask finished.
	eventActionComplete = "Complete"
	// eventActionStop: a DeploymentTask stopped handing out work.
	eventActionStop = "Stop"
	// eventActionReplicate: the replication of a Package's content
	// changed state (replicated, failed, waiting).
	eventActionReplicate = "Replicate"
)
