package main

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Labels of the baseline's objects.
const (
	labelServer    = "bench.siteops.io/server"
	labelComponent = "app.kubernetes.io/component"
	labelSitePfx   = "bench.siteops.io/site-"
)

// baselineObjects are, for site i, the objects the operator makes for a
// Site served by one SiteServer, written directly: a ConfigMap, a
// task-service Deployment, a package-service StatefulSet with a claim of
// class, the server's two Services and the site's two Services. Pods are
// shaped as the operator's (restricted security context, requests of 50m
// CPU and 64Mi, the site-server nodeSelector, a ConfigMap volume).
func baselineObjects(namespace string, i int, nodeSelector map[string]string, class string) []client.Object {
	server := fmt.Sprintf("b%04d", i)
	site := fmt.Sprintf("s%04d", i)
	labels := func(component string) map[string]string {
		return map[string]string{labelServer: server, labelComponent: component, labelSitePfx + site: "true"}
	}
	selector := func(component string) map[string]string {
		return map[string]string{labelServer: server, labelComponent: component}
	}
	config := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: server + "-config", Namespace: namespace},
		Data:       map[string]string{"config.json": fmt.Sprintf(`{"siteServer":%q,"sites":[%q]}`, server, site)},
	}
	task := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: server + "-task", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: selector("task-service")},
			Template: podTemplate(labels("task-service"), config.Name, nodeSelector, false),
		},
	}
	pkg := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: server + "-package", Namespace: namespace},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](1),
			ServiceName:         server + "-package",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: selector("package-service")},
			Template:            podTemplate(labels("package-service"), config.Name, nodeSelector, true),
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "content"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: ptr.To(class),
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceStorage: resource.MustParse("10Gi"),
					}},
				},
			}},
		},
	}
	return []client.Object{
		config, task, pkg,
		service(namespace, server+"-task", selector("task-service")),
		service(namespace, server+"-package", selector("package-service")),
		service(namespace, "site-"+site+"-task", map[string]string{labelSitePfx + site: "true", labelComponent: "task-service"}),
		service(namespace, "site-"+site+"-package", map[string]string{labelSitePfx + site: "true", labelComponent: "package-service"}),
	}
}

func podTemplate(labels map[string]string, configMap string, nodeSelector map[string]string, content bool) corev1.PodTemplateSpec {
	container := corev1.Container{
		Name:  labels[labelComponent],
		Image: "site-operator:bench",
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi"),
		}},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/site-operator", ReadOnly: true}},
	}
	if content {
		container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{Name: "content", MountPath: "/var/lib/site-operator/content"})
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			Containers:                   []corev1.Container{container},
			NodeSelector:                 nodeSelector,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				RunAsGroup:     ptr.To[int64](65532),
				FSGroup:        ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: configMap}},
			}}},
		},
	}
}

func service(namespace, name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromString("http")}},
		},
	}
}

// operatorObjects are, for site i, what a user writes for the operator: a
// Site and a SiteServer serving it.
func operatorObjects(i int, nodeSelector map[string]string, class string) []client.Object {
	site := fmt.Sprintf("site-%04d", i)
	ss := &siteopsv1.SiteServer{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ss-%04d", i)},
		Spec:       siteopsv1.SiteServerSpec{Sites: []string{site}, NodeSelector: nodeSelector},
	}
	ss.Spec.Services.Package.Storage.StorageClassName = class
	return []client.Object{
		&siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}, Spec: siteopsv1.SiteSpec{DisplayName: "Branch office " + site}},
		ss,
	}
}
