from features.patients import dependencies as patients_dependencies

CareTeamMember = patients_dependencies.CareTeamMember
