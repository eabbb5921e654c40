package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/siteservice/config"
)

// Labels the operator puts on what it runs.
const (
	// LabelSiteServer names the SiteServer a workload or pod belongs to.
	LabelSiteServer = "siteops.io/siteserver"
	// LabelComponent is task-service or package-service.
	LabelComponent = "app.kubernetes.io/component"
	// LabelSitePrefix + site name is "true" on the pods that serve the site.
	LabelSitePrefix = "site.siteops.io/"
	// LabelUnassigned is "true" on the pods of unassigned SiteServers.
	LabelUnassigned = "siteops.io/unassigned"
	// AnnotationConfigHash on a pod template rolls the pods when their
	// configuration changes.
	AnnotationConfigHash = "siteops.io/config-hash"

	componentTask    = "task-service"
	componentPackage = "package-service"
	configMountPath  = "/etc/site-operator"
	contentVolume    = "content"
	// nonRootUID is the user the image's binaries run as.
	nonRootUID = int64(65532)
)

// defaultStorageSize is the content store's size when the spec names none
// (the CRD defaults it too).
var defaultStorageSize = resource.MustParse("10Gi")

// WorkloadConfig is what the builders need besides the SiteServer.
type WorkloadConfig struct {
	// Namespace holds every workload, Service and ConfigMap.
	Namespace string
	// Image holds the task-service and package-service binaries.
	Image string
	// ImagePullPolicy of the workloads' containers.
	ImagePullPolicy corev1.PullPolicy
	// PlainHTTP says that the site services serve plain HTTP instead of
	// HTTPS (development only); advertised URLs then start with http://.
	PlainHTTP bool
	// ServiceAccount the site services run as; empty means
	// DefaultSiteServiceAccount. The chart and config/rbac create it and
	// its RBAC, never the manager.
	ServiceAccount string
	// Agents configures the task services' agent API; zero fields take the
	// task service's defaults.
	Agents config.AgentsConfig
}

// DefaultSiteServiceAccount is the site services' ServiceAccount in the
// workload namespace, as config/rbac/site-service and the chart name it.
const DefaultSiteServiceAccount = "site-operator-site-service"

// Where the site services' pods mount their credentials.
const (
	// serviceAccountTokenPath is where client-go's in-cluster
	// configuration looks for the token, the cluster's CA and the namespace.
	serviceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// tokenLifetime bounds the projected token; the kubelet renews it at
	// 80% of it, and client-go rereads the file.
	tokenLifetime = int64(3600)
)

func (wc WorkloadConfig) serviceAccount() string {
	if wc.ServiceAccount == "" {
		return DefaultSiteServiceAccount
	}
	return wc.ServiceAccount
}

// scheme is the URL scheme of the site services' API.
func (wc WorkloadConfig) scheme() string {
	if wc.PlainHTTP {
		return "http"
	}
	return "https"
}

func taskName(ss *siteopsv1.SiteServer) string    { return ss.Name + "-task" }
func packageName(ss *siteopsv1.SiteServer) string { return ss.Name + "-package" }
func configName(ss *siteopsv1.SiteServer) string  { return ss.Name + "-config" }

// siteServiceName is the name of a Site's Service for a component: the
// name limits of Sites (50) keep it within the 63 of a Service.
func siteServiceName(site, component string) string {
	if component == componentTask {
		return "site-" + site + "-task"
	}
	return "site-" + site + "-package"
}

// serviceURL is the in-cluster URL of a Service.
func serviceURL(scheme, name, namespace string, port int) string {
	return fmt.Sprintf("%s://%s.%s.svc:%d", scheme, name, namespace, port)
}

func commonLabels(ss *siteopsv1.SiteServer, component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "site-operator",
		"app.kubernetes.io/managed-by": "site-operator",
		LabelComponent:                 component,
		LabelSiteServer:                ss.Name,
	}
}

// podLabels adds one label per site served (or the unassigned label) to the
// common labels, so that each Site's Services select the pods serving it.
func podLabels(ss *siteopsv1.SiteServer, component string) map[string]string {
	labels := commonLabels(ss, component)
	if len(ss.Spec.Sites) == 0 {
		labels[LabelUnassigned] = "true"
	}
	for _, site := range ss.Spec.Sites {
		labels[LabelSitePrefix+site] = "true"
	}
	return labels
}

func selectorLabels(ss *siteopsv1.SiteServer, component string) map[string]string {
	return map[string]string{LabelSiteServer: ss.Name, LabelComponent: component}
}

func ownerReference(ss *siteopsv1.SiteServer) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(siteopsv1.GroupVersion.String()).WithKind("SiteServer").
		WithName(ss.Name).WithUID(ss.UID).
		WithController(true).WithBlockOwnerDeletion(true)
}

// serviceConfig is the configuration the SiteServer's pods load.
func serviceConfig(ss *siteopsv1.SiteServer, wc WorkloadConfig) config.Config {
	cfg := config.Defaults(ss.Name, slices.Sorted(slices.Values(ss.Spec.Sites)))
	cfg.Task.Agents = wc.Agents
	if limit := ss.Spec.Services.Package.BandwidthLimit; limit != nil {
		cfg.Package.BandwidthLimit = limit.Value()
	}
	return cfg
}

// desiredConfigMap holds the configuration of the SiteServer's services,
// and the hash that rolls their pods when it changes. The bandwidth limit
// is left out of the hash: the package service follows it through the API,
// and a restart would cut the transfers it limits.
func desiredConfigMap(ss *siteopsv1.SiteServer, wc WorkloadConfig) (*corev1ac.ConfigMapApplyConfiguration, string, error) {
	cfg := serviceConfig(ss, wc)
	data, err := cfg.Marshal()
	if err != nil {
		return nil, "", err
	}
	cfg.Package.BandwidthLimit = 0
	hashed, err := cfg.Marshal()
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256([]byte(hashed))
	cm := corev1ac.ConfigMap(configName(ss), wc.Namespace).
		WithLabels(commonLabels(ss, "config")).
		WithOwnerReferences(ownerReference(ss)).
		WithData(map[string]string{config.FileName: data})
	return cm, hex.EncodeToString(sum[:8]), nil
}

// restrictedPodSecurity meets the restricted Pod Security Standard.
func restrictedPodSecurity() *corev1ac.PodSecurityContextApplyConfiguration {
	return corev1ac.PodSecurityContext().
		WithRunAsNonRoot(true).WithRunAsUser(nonRootUID).WithRunAsGroup(nonRootUID).WithFSGroup(nonRootUID).
		// A content volume of many files is not re-chowned at every start.
		WithFSGroupChangePolicy(corev1.FSGroupChangeOnRootMismatch).
		WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))
}

func restrictedContainerSecurity() *corev1ac.SecurityContextApplyConfiguration {
	return corev1ac.SecurityContext().
		WithAllowPrivilegeEscalation(false).WithReadOnlyRootFilesystem(true).WithRunAsNonRoot(true).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))
}

// defaultRequests are the requests of a site-service container for the
// resources the spec says nothing about.
var defaultRequests = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("50m"),
	corev1.ResourceMemory: resource.MustParse("64Mi"),
}

// containerResources are the spec's resources with requests defaulted, so
// that every pod is scheduled against what it uses. A default request never
// exceeds the user's limit for that resource: the pod would be refused.
func containerResources(res siteopsv1.Resources) *corev1ac.ResourceRequirementsApplyConfiguration {
	limits := res.Limits.List()
	requests := corev1.ResourceList{}
	for name, def := range defaultRequests {
		if limit, ok := limits[name]; ok && limit.Cmp(def) < 0 {
			def = limit
		}
		requests[name] = def
	}
	maps.Copy(requests, res.Requests.List())
	out := corev1ac.ResourceRequirements().WithRequests(requests)
	if len(limits) > 0 {
		out.WithLimits(limits)
	}
	return out
}

// serviceContainer is the container of a task-service or package-service
// pod: the binary of that name from the image, its configuration, serving
// certificate and ServiceAccount token mounted read-only, bound to the
// pod's own IP (on the simulated cluster every pod shares the host's
// loopback), probes on the health port.
func serviceContainer(component string, wc WorkloadConfig, res siteopsv1.Resources) *corev1ac.ContainerApplyConfiguration {
	probe := func(path string) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromString("health")).
				WithScheme(corev1.URISchemeHTTP)).
			WithPeriodSeconds(10).WithTimeoutSeconds(2).WithFailureThreshold(3).WithSuccessThreshold(1)
	}
	args := []string{"--listen-host=$(POD_IP)"}
	if wc.PlainHTTP {
		args = append(args, "--insecure-http")
	}
	return corev1ac.Container().
		WithName(component).
		WithImage(wc.Image).
		WithImagePullPolicy(wc.ImagePullPolicy).
		WithCommand("/usr/local/bin/"+component, "--config="+configMountPath+"/"+config.FileName).
		WithArgs(args...).
		WithEnv(corev1ac.EnvVar().WithName("POD_IP").
			WithValueFrom(corev1ac.EnvVarSource().WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("status.podIP")))).
		WithPorts(
			corev1ac.ContainerPort().WithName("http").WithContainerPort(config.DefaultPort).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("health").WithContainerPort(config.DefaultHealthPort).WithProtocol(corev1.ProtocolTCP),
		).
		WithReadinessProbe(probe("/readyz")).
		WithLivenessProbe(probe("/healthz")).
		WithResources(containerResources(res)).
		WithSecurityContext(restrictedContainerSecurity()).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("config").WithMountPath(configMountPath).WithReadOnly(true),
			corev1ac.VolumeMount().WithName(tlsVolume).WithMountPath(config.DefaultTLSDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("token").WithMountPath(serviceAccountTokenPath).WithReadOnly(true))
}

// podSpec runs container as the site services' ServiceAccount. Its token
// is not automounted (a pod of the operator gets none unless it is listed
// here) but projected with a bounded lifetime at the standard path.
func podSpec(ss *siteopsv1.SiteServer, wc WorkloadConfig, container *corev1ac.ContainerApplyConfiguration) *corev1ac.PodSpecApplyConfiguration {
	spec := corev1ac.PodSpec().
		WithContainers(container).
		WithServiceAccountName(wc.serviceAccount()).
		WithSecurityContext(restrictedPodSecurity()).
		WithAutomountServiceAccountToken(false).
		WithEnableServiceLinks(false).
		WithVolumes(
			corev1ac.Volume().WithName("config").
				WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(configName(ss))),
			// Readable by the pod's group (fsGroup) only.
			corev1ac.Volume().WithName(tlsVolume).
				WithSecret(corev1ac.SecretVolumeSource().WithSecretName(tlsSecretName(ss)).WithDefaultMode(0o440)),
			corev1ac.Volume().WithName("token").WithProjected(corev1ac.ProjectedVolumeSource().WithSources(
				corev1ac.VolumeProjection().WithServiceAccountToken(corev1ac.ServiceAccountTokenProjection().
					WithPath("token").WithExpirationSeconds(tokenLifetime)),
				corev1ac.VolumeProjection().WithConfigMap(corev1ac.ConfigMapProjection().WithName("kube-root-ca.crt").
					WithItems(corev1ac.KeyToPath().WithKey("ca.crt").WithPath("ca.crt"))),
				corev1ac.VolumeProjection().WithDownwardAPI(corev1ac.DownwardAPIProjection().
					WithItems(corev1ac.DownwardAPIVolumeFile().WithPath("namespace").
						WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("metadata.namespace")))))))
	if len(ss.Spec.NodeSelector) > 0 {
		spec.WithNodeSelector(ss.Spec.NodeLabels())
	}
	for i := range ss.Spec.Tolerations {
		t := ss.Spec.Tolerations[i]
		tol := corev1ac.Toleration()
		if t.Key != "" {
			tol.WithKey(t.Key)
		}
		if t.Operator != "" {
			tol.WithOperator(t.Operator)
		}
		if t.Value != "" {
			tol.WithValue(t.Value)
		}
		if t.Effect != "" {
			tol.WithEffect(t.Effect)
		}
		if t.TolerationSeconds != nil {
			tol.WithTolerationSeconds(*t.TolerationSeconds)
		}
		spec.WithTolerations(tol)
	}
	return spec
}

// taskReplicas is spec.services.task.replicas, 1 when unset.
func taskReplicas(ss *siteopsv1.SiteServer) int32 {
	if r := ss.Spec.Services.Task.Replicas; r != nil {
		return *r
	}
	return 1
}

// desiredTaskDeployment runs the SiteServer's task service.
func desiredTaskDeployment(ss *siteopsv1.SiteServer, wc WorkloadConfig, configHash string) *appsv1ac.DeploymentApplyConfiguration {
	return appsv1ac.Deployment(taskName(ss), wc.Namespace).
		WithLabels(commonLabels(ss, componentTask)).
		WithOwnerReferences(ownerReference(ss)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(taskReplicas(ss)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(ss, componentTask))).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(podLabels(ss, componentTask)).
				WithAnnotations(map[string]string{AnnotationConfigHash: configHash}).
				WithSpec(podSpec(ss, wc, serviceContainer(componentTask, wc, ss.Spec.Services.Task.Resources)))))
}

// desiredPackageStatefulSet runs the SiteServer's package service with its
// content store on a PersistentVolumeClaim.
func desiredPackageStatefulSet(ss *siteopsv1.SiteServer, wc WorkloadConfig, configHash string) *appsv1ac.StatefulSetApplyConfiguration {
	storage := ss.Spec.Services.Package.Storage
	size := defaultStorageSize
	if storage.Size != nil {
		size = *storage.Size
	}
	claim := corev1ac.PersistentVolumeClaimSpec().
		WithAccessModes(corev1.ReadWriteOnce).
		WithVolumeMode(corev1.PersistentVolumeFilesystem).
		WithResources(corev1ac.VolumeResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceStorage: size}))
	if storage.StorageClassName != "" {
		claim.WithStorageClassName(storage.StorageClassName)
	}
	container := serviceContainer(componentPackage, wc, ss.Spec.Services.Package.Resources).
		WithVolumeMounts(corev1ac.VolumeMount().WithName(contentVolume).WithMountPath(config.DefaultStoragePath))
	// The claim goes with the StatefulSet, which goes with the SiteServer
	// (its owner), unless the user asked to keep it.
	whenDeleted := appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	if storage.RetainOnDelete {
		whenDeleted = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	return appsv1ac.StatefulSet(packageName(ss), wc.Namespace).
		WithLabels(commonLabels(ss, componentPackage)).
		WithOwnerReferences(ownerReference(ss)).
		WithSpec(appsv1ac.StatefulSetSpec().
			WithReplicas(1).
			WithServiceName(packageName(ss)).
			WithPodManagementPolicy(appsv1.ParallelPodManagement).
			WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
				WithWhenDeleted(whenDeleted).WithWhenScaled(appsv1.RetainPersistentVolumeClaimRetentionPolicyType)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(ss, componentPackage))).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(podLabels(ss, componentPackage)).
				WithAnnotations(map[string]string{AnnotationConfigHash: configHash}).
				WithSpec(podSpec(ss, wc, container))).
			// Not corev1ac.PersistentVolumeClaim(): a template has no kind,
			// apiVersion or namespace of its own.
			WithVolumeClaimTemplates((&corev1ac.PersistentVolumeClaimApplyConfiguration{}).
				WithName(contentVolume).
				WithLabels(selectorLabels(ss, componentPackage)).
				WithSpec(claim)))
}

// desiredServerService is the SiteServer's own Service for a component:
// the endpoint of an unassigned server, and status.<service>.endpoint.
func desiredServerService(ss *siteopsv1.SiteServer, component string, wc WorkloadConfig) *corev1ac.ServiceApplyConfiguration {
	name := taskName(ss)
	if component == componentPackage {
		name = packageName(ss)
	}
	spec := serviceSpec(selectorLabels(ss, component))
	exposure := ss.Spec.Exposure
	switch exposure.Type {
	case siteopsv1.ExposureNodePort, siteopsv1.ExposureLoadBalancer:
		// Local: a branch's traffic stays on the node that serves it, and
		// the pod sees the agent's own address.
		spec.WithType(corev1.ServiceType(exposure.Type)).
			WithExternalTrafficPolicy(corev1.ServiceExternalTrafficPolicyLocal)
		if exposure.Type == siteopsv1.ExposureLoadBalancer && exposure.LoadBalancerClass != nil {
			spec.WithLoadBalancerClass(*exposure.LoadBalancerClass)
		}
	}
	svc := corev1ac.Service(name, wc.Namespace).
		WithLabels(commonLabels(ss, component)).
		WithOwnerReferences(ownerReference(ss)).
		WithSpec(spec)
	if len(exposure.Annotations) > 0 {
		svc.WithAnnotations(exposure.Annotations)
	}
	return svc
}

// desiredSiteService selects the pods of every SiteServer serving site for
// a component; the Site owns it.
func desiredSiteService(site *siteopsv1.Site, component string, wc WorkloadConfig) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(siteServiceName(site.Name, component), wc.Namespace).
		WithLabels(map[string]string{
			"app.kubernetes.io/name":       "site-operator",
			"app.kubernetes.io/managed-by": "site-operator",
			LabelComponent:                 component,
			"siteops.io/site":              site.Name,
		}).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(siteopsv1.GroupVersion.String()).WithKind("Site").
			WithName(site.Name).WithUID(site.UID).
			WithController(true).WithBlockOwnerDeletion(true)).
		WithSpec(serviceSpec(map[string]string{LabelSitePrefix + site.Name: "true", LabelComponent: component}))
}

func serviceSpec(selector map[string]string) *corev1ac.ServiceSpecApplyConfiguration {
	return corev1ac.ServiceSpec().
		WithType(corev1.ServiceTypeClusterIP).
		WithSelector(selector).
		WithPorts(corev1ac.ServicePort().WithName("http").WithProtocol(corev1.ProtocolTCP).
			WithPort(config.DefaultPort).WithTargetPort(intstr.FromString("http")))
}

// desiredTaskPDB keeps one task-service pod up through voluntary
// disruptions; only built when the task service has more than one replica.
func desiredTaskPDB(ss *siteopsv1.SiteServer, wc WorkloadConfig) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	return policyv1ac.PodDisruptionBudget(taskName(ss), wc.Namespace).
		WithLabels(commonLabels(ss, componentTask)).
		WithOwnerReferences(ownerReference(ss)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(ss, componentTask))))
}
